#!/usr/bin/env bash
# Installs the OHIF Viewer the real-viewer test opens our SR in: the prebuilt dist/ of the npm package
# @ohif/app, pinned by version and by the registry's sha512 integrity, unpacked under var/ohif/<version>/
# (ignored by git; the test finds it there or at $EUSDX_OHIF_DIST). Idempotent: nothing is fetched when
# that version is already unpacked. Needs npm (Debian package "npm"); without npm it says so and exits 0,
# and the viewer test skips locally (fails in CI, where EUSDX_REQUIRE_TOOLS=1).
set -euo pipefail
VERSION="3.13.2"
INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${EUSDX_OHIF_CACHE:-$ROOT/var/ohif}/$VERSION"
[ -f "$DEST/dist/index.html" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
  echo "install-ohif: npm not found; the OHIF viewer test will not run" >&2
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tarball="$work/ohif-app-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "install-ohif: @ohif/app@$VERSION integrity mismatch ($got)" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
mkdir -p "$DEST"
rm -rf "$DEST/dist.tmp" && mv "$work/package/dist" "$DEST/dist.tmp" && mv "$DEST/dist.tmp" "$DEST/dist"
echo "install-ohif: @ohif/app@$VERSION unpacked in $DEST/dist"
