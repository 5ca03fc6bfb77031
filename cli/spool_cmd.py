"""``eusdx spool purge [--dry-run]``: apply retention (and disk-pressure cleaning) now, or show the plan."""

from __future__ import annotations

import json

import typer

from cli.context import settings_from

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    spool_app = typer.Typer(help="The spool of received studies: retention and cleaning.",
                            no_args_is_help=True)
    app.add_typer(spool_app, name="spool")

    @spool_app.command("purge")
    def purge(
        ctx: typer.Context,
        dry_run: bool = typer.Option(False, "--dry-run", help="only show what would be deleted"),
        pressure: bool = typer.Option(False, "--pressure",
                                      help="also delete settled studies early, as under disk pressure"),
        as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
    ) -> None:
        """Delete what retention no longer keeps (every deletion audited first); see ``--dry-run``."""
        from audit import AuditLog
        from dicom_node.assembler import MARKER
        from dicom_node.export import outbox_for
        from dicom_node.cleaner import Cleaner
        from dicom_node.spool import Spool
        from eusdx.durable import read_json_object

        settings = settings_from(ctx)
        spool = Spool(settings.spool_dir)

        def is_open(study: str) -> bool:
            # a study with more instances than its completion marker counted is open in a running node
            try:
                marker = read_json_object(spool.study_dir(study) / MARKER)
            except (OSError, ValueError):
                return True
            return int(marker.get("instances", 0)) < len(spool.instances(study))

        audit = AuditLog.from_settings(settings)
        try:
            audit.qa_event(actor="cli", action="spool-purge", params={"dry_run": dry_run, "pressure": pressure})
            cleaner = Cleaner(settings, audit, spool, outbox_for(settings), is_open=is_open)
            deletions = cleaner.run(dry_run=dry_run, pressure=True if pressure else None)
        finally:
            audit.close()
        if as_json:
            for d in deletions:
                typer.echo(json.dumps(d.as_dict(), sort_keys=True))
            return
        verb = "would delete" if dry_run else "deleted"
        typer.echo(f"{'WHAT':12}  {'STATE':13}  {'CAUSE':13}  {'AGE d':>6}  {'MB':>8}  STUDY / ITEM")
        for d in deletions:
            name = d.study_uid + (f" ({d.item_id})" if d.item_id else "")
            typer.echo(f"{d.what:12}  {d.state:13}  {d.cause:13}  {d.age_days:6.1f}  "
                       f"{d.size_bytes / 1e6:8.2f}  {name}")
        typer.echo(f"{verb} {len(deletions)} item(s), {sum(d.size_bytes for d in deletions) / 1e6:.1f} MB")
