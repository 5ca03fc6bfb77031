#!/usr/bin/env bash
# Installs the non-Python tools the tests and the demo talk to: DCMTK (real DICOM peers: storescu,
# storescp, echoscu, dsrdump), dicom3tools (dciodvfy validates every file we write), Chromium
# (renders the evaluation report in a test) with chromium-driver (Selenium drives the dashboard in
# its browser test) and Orthanc with its DICOMweb plugin (STOW-RS archive and sender, Storage
# Commitment SCP in the result-channel tests, the durable peer of bench/ingest.py; tests and benches
# start their own instance, the packaged service is not used). Only what is missing is installed; without root
# nothing is installed and the tests that need a tool say so.
set -euo pipefail
need=()
[ -x /usr/bin/storescu ] && [ -x /usr/bin/dsrdump ] || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)  # the OHIF viewer and dashboard tests drive Chromium
command -v npm >/dev/null 2>&1 || need+=(npm)  # scripts/install-ohif.sh fetches the pinned OHIF build
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: not root; please install: ${need[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
echo "install-system-deps: installed ${need[*]}"
