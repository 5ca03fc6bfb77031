"""``eusdx outbox list|retry``: inspect the export outbox and replay dead-lettered items."""

from __future__ import annotations

import datetime as dt
import json
from typing import Optional

import typer

from cli.context import settings_from
from eusdx.errors import UsageError

__all__ = ["register"]


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(app: typer.Typer) -> None:
    outbox_app = typer.Typer(help="Export outbox: SRs waiting for, sent to, or dead at PACS.",
                             no_args_is_help=True)
    app.add_typer(outbox_app, name="outbox")

    @outbox_app.command("list")
    def list_items(
        ctx: typer.Context,
        state: Optional[str] = typer.Option(
            None, show_default="every state", help="only pending, sent, commit-pending, committed or dead-letter"),
        as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
    ) -> None:
        """One line per item and destination: id, state, attempts, next try, last error."""
        from dicom_node.export import outbox_for

        settings = settings_from(ctx)
        lines = []
        for item in outbox_for(settings).items():
            for dest, d in sorted(item["destinations"].items()) or [("-", {"state": "held"})]:
                if state and d.get("state") != state:
                    continue
                lines.append({"id": item["id"], "study_uid": item["study_uid"],
                              "sop_uid": item["sop_uid"], "destination": dest,
                              "state": d.get("state"), "attempts": d.get("attempts", 0),
                              "next_due": d.get("next_due"), "last_error": d.get("last_error")})
        if as_json:
            for line in lines:
                typer.echo(json.dumps(line, sort_keys=True))
            return
        typer.echo(f"{'ID':16}  {'STATE':14}  {'TRIES':>5}  {'NEXT TRY':20}  DESTINATION / LAST ERROR")
        for line in lines:
            nxt = _when(line["next_due"]) if line["state"] in ("pending", "commit-pending") else "-"
            err = f"  ({line['last_error']})" if line["last_error"] else ""
            typer.echo(f"{line['id']:16}  {line['state']:14}  {line['attempts']:>5}  {nxt:20}  "
                       f"{line['destination']}{err}")
        typer.echo(f"{len(lines)} item destination(s)")

    @outbox_app.command("retry")
    def retry(
        ctx: typer.Context,
        item_id: Optional[str] = typer.Argument(None, help="outbox item id (from `outbox list`)"),
        all_: bool = typer.Option(False, "--all", help="every dead-letter item"),
    ) -> None:
        """Re-arm dead-lettered destinations (fresh attempt budget, due now); audited."""
        from audit import AuditLog
        from dicom_node.export import outbox_for

        if (item_id is None) == (not all_):
            raise UsageError("give an item ID or --all (not both)")
        settings = settings_from(ctx)
        outbox = outbox_for(settings)
        from cli.dashboard_ops import replay_dead_letters

        audit = AuditLog.from_settings(settings)
        try:
            audit.qa_event(actor="cli", action="outbox-retry",
                           params={"item": item_id, "all": all_})
            n = replay_dead_letters(outbox, audit, None if item_id is None else [item_id])  # None: --all
        finally:
            audit.close()
        typer.echo(f"re-armed {n} item destination(s)")
