"""``eusdx bundle keygen|sign|verify``: who made a model bundle (Ed25519, ``models.signing``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

bundle_app = typer.Typer(name="bundle", help="Sign and verify model bundles.", no_args_is_help=True)


@bundle_app.command("keygen")
def keygen_cmd(
    private: Annotated[Path, typer.Option("--private", help="private key to write (keep it off the hospital "
                                          "servers: it signs bundles)")],
    public: Annotated[Path, typer.Option("--public", help="public key to write (goes into bundle_trusted_keys)")],
) -> None:
    """Make an Ed25519 bundle signing key pair (private key owner-only)."""
    from models.signing import generate_key_pair

    kid = generate_key_pair(private, public)
    typer.echo(f"key {kid}: private {private} (0600), public {public}")


@bundle_app.command("sign")
def sign_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle version folder")],
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key (PEM)")],
) -> None:
    """Sign a bundle's manifest (after checking every file against it)."""
    from models.bundle import verify_bundle
    from models.signing import sign_manifest

    verify_bundle(bundle)  # integrity first: never sign a bundle whose files do not match
    kid = sign_manifest(Path(bundle), key)
    typer.echo(f"{bundle}: signed by key {kid}")


@bundle_app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="bundle version folder or the current link")],
) -> None:
    """Check a bundle as the worker does: signature (bundle_trusted_keys), pin, hashes, model types."""
    from cli.context import settings_from
    from models.bundle import BundleTrust, verify_bundle

    digest = verify_bundle(bundle, trust=BundleTrust.from_settings(settings_from(ctx)))
    typer.echo(f"{bundle}: ok (manifest sha256 {digest})")


def register(app: typer.Typer) -> None:
    """Add the ``bundle`` command group to the CLI."""
    app.add_typer(bundle_app, name="bundle")
