"""``eusdx audit ...``: QA queries over the audit log; every read is itself audited."""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from audit.queries import QaReader

__all__ = ["register"]

audit_app = typer.Typer(name="audit", help="Query and verify the audit log (QA).",
                        no_args_is_help=True)

Since = Annotated[Optional[str], typer.Option("--since", show_default="no lower bound", help="from this UTC date/time (ISO)")]
Until = Annotated[Optional[str], typer.Option("--until", show_default="no upper bound", help="before this UTC date/time (ISO)")]
Ae = Annotated[Optional[str], typer.Option("--ae", show_default="any", help="sending (calling) AE title")]
Status = Annotated[Optional[str], typer.Option("--status", show_default="any", help="state / status to keep")]
Label = Annotated[Optional[str], typer.Option("--label", show_default="any", help="predicted label, e.g. GIST")]
Bundle = Annotated[Optional[str], typer.Option("--bundle", show_default="any", help="model bundle version")]
Accession = Annotated[Optional[str], typer.Option("--accession", show_default="any", help="accession number")]
Limit = Annotated[int, typer.Option("--limit", help="at most this many rows; 0 = all")]
Format = Annotated[str, typer.Option("--format", "-f", help="table, csv or json")]


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): fall back to the uid
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def _reader(ctx: typer.Context) -> QaReader:
    """The QA reader over an existing, migrated audit database (nothing is created).

    Raises
    ------
    audit.AuditUnavailable
        (exit 69) No database file, no schema, or the database cannot be opened.
    """
    from audit import AuditLog, AuditUnavailable
    from audit._engine import sqlite_file
    from audit.migrate import current_revision
    from audit.queries import QaReader
    from cli.context import settings_from

    settings = settings_from(ctx)
    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        raise AuditUnavailable(f"there is no audit database at {path}; run `eusdx db upgrade` to "
                               "create it (`eusdx serve` also does on its first start)")
    log = AuditLog.from_settings(settings)
    try:
        revision = current_revision(log.engine)
    except Exception as exc:  # noqa: BLE001 - any driver error means the same to the user
        log.close()
        raise AuditUnavailable(f"cannot open the audit database: {type(exc).__name__}") from exc
    if revision is None:
        log.close()
        raise AuditUnavailable("the audit database has no schema yet; run `eusdx db upgrade`")
    ctx.call_on_close(log.close)
    return QaReader(log, _actor())


def _check_format(fmt: str) -> None:
    from audit.formats import FORMATS
    from eusdx.errors import UsageError

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")


def _run(ctx: typer.Context, name: str, fmt: str, **filters: Any) -> None:
    from audit.formats import render
    from audit.queries import Filters

    _check_format(fmt)
    f = Filters.from_text(**filters)
    typer.echo(render(_reader(ctx).query(name, f), fmt))


def _listing(name: str, doc: str) -> None:
    """Register ``eusdx audit <name>``: one of the row queries of ``audit.queries`` that take
    every filter (studies, failures, timings, exports); only the name and the help differ."""

    def command(ctx: typer.Context, since: Since = None, until: Until = None, ae: Ae = None,
                status: Status = None, label: Label = None, bundle: Bundle = None,
                accession: Accession = None, limit: Limit = 1000, fmt: Format = "table") -> None:
        _run(ctx, name, fmt, since=since, until=until, ae=ae, status=status, label=label,
             bundle=bundle, accession=accession, limit=limit)

    command.__doc__ = doc
    command.__name__ = f"{name}_cmd"
    audit_app.command(name)(command)


_listing("studies", "Studies and their current state (newest first).")
_listing("failures", "Rejections, failed studies, analysis errors and failed exports (newest first).")
_listing("timings", "Per-stage seconds of each analysis (--status ok|error).")
_listing("exports", "The outbox: latest export status per study and destination.")


@audit_app.command("stats")
def stats_cmd(ctx: typer.Context, since: Since = None, until: Until = None, ae: Ae = None,
              label: Label = None, bundle: Bundle = None, accession: Accession = None,
              fmt: Format = "table") -> None:
    """Volumes, failure rate by reason, p50/p95 seconds per stage, outbox depth."""
    _run(ctx, "stats", fmt, since=since, until=until, ae=ae, label=label, bundle=bundle,
         accession=accession, limit=0)


@audit_app.command("show")
def show_cmd(ctx: typer.Context,
             study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID")],
             fmt: Format = "table") -> None:
    """One study: current state and every event naming it, in order."""
    from audit.errors import QueryError
    from audit.formats import render_rows

    _check_format(fmt)
    result = _reader(ctx).show(study_uid)
    if result is None:
        raise QueryError(f"study {study_uid} is not in the audit log")
    if fmt == "json":
        import json

        typer.echo(json.dumps(result, indent=2, default=str))
        return
    study = [result["study"]] if result["study"] else []
    typer.echo("# study\n" + render_rows(study, fmt) + "\n\n# events\n"
               + render_rows(result["events"], fmt))


@audit_app.command("verify")
def verify_cmd(ctx: typer.Context) -> None:
    """Recompute the hash chain against the signed anchors and check the projections; exit
    non-zero naming the first broken row or a rewrite the anchors reveal."""
    from audit.anchor import anchor_map, installation_anchors
    from audit.errors import ChainBroken
    from cli.context import settings_from

    settings = settings_from(ctx)
    anchors = installation_anchors(settings)
    check = _reader(ctx).verify(anchor_map(anchors))
    chain = check.chain
    if not chain.ok:
        raise ChainBroken(f"audit chain broken at {chain.broken} "
                          f"({chain.rows} rows verified before it)")
    if check.projections:
        raise ChainBroken(f"audit chain ok ({chain.rows} rows) but a projection disagrees with "
                          f"the events: {check.projections[0]} "
                          f"({len(check.projections)} difference(s) shown at most 20)")
    typer.echo(f"audit chain ok: {chain.rows} rows, last seq {chain.last_seq}, "
               f"head {chain.last_hash}; projections match the events")
    if anchors:
        typer.echo(f"matches {len(anchors)} signed anchor(s), latest seq {anchors[-1].seq} "
                   f"written {anchors[-1].written}")
    else:
        typer.echo(f"warning: no signed anchor in {settings.anchor_dir}: a rewrite of the whole "
                   "chain could not be detected", err=True)


@audit_app.command("anchor")
def anchor_cmd(ctx: typer.Context) -> None:
    """Write a signed anchor of the chain head now (``eusdx serve`` does it on its own)."""
    from audit import AuditLog
    from audit.anchor import AnchorWriter
    from cli.context import settings_from

    settings = settings_from(ctx)
    log = AuditLog.from_settings(settings)
    try:
        a = AnchorWriter(log.engine, settings).anchor("manual", force=True)
    finally:
        log.close()
    assert a is not None
    typer.echo(f"anchor seq {a.seq} hash {a.row_hash} -> {a.path}")


@audit_app.command("rotate-key")
def rotate_key_cmd(ctx: typer.Context) -> None:
    """Add a new audit HMAC key to the key file and make it current (old keys stay, so old
    pseudonyms remain verifiable with `eusdx audit pseudonym`)."""
    from cli.context import settings_from
    from eusdx.keys import rotate_key_file

    settings = settings_from(ctx)
    kid = rotate_key_file(settings.hmac_key_path)
    typer.echo(f"audit HMAC key {kid} is now current in {settings.hmac_key_path}; restart "
               "eusdx serve and the workers")


@audit_app.command("pseudonym")
def pseudonym_cmd(
    ctx: typer.Context,
    patient_id: Annotated[str, typer.Argument(help="patient identifier to pseudonymise")],
    check: Annotated[Optional[str], typer.Option("--check", show_default="none: print the pseudonyms", help="pseudonym to verify")] = None,
) -> None:
    """Print a patient identifier's pseudonym under every key id (or check one pseudonym)."""
    from cli.context import settings_from
    from eusdx.errors import DataError
    from eusdx.keys import load_keyring

    ring = load_keyring(settings_from(ctx))
    if check is not None:
        kid = ring.matching_key(patient_id.strip(), check.strip().lower())
        if kid is None:
            raise DataError("the pseudonym does not belong to this identifier under any key")
        typer.echo(f"matches key {kid}")
        return
    for kid in ring.keys:
        mark = " (current)" if kid == ring.current else ""
        typer.echo(f"{kid}{mark}: {ring.pseudonym(patient_id.strip(), kid)}")


@audit_app.command("performance")
def performance_cmd(ctx: typer.Context, since: Since = None, until: Until = None, ae: Ae = None,
                    label: Label = None, bundle: Bundle = None,
                    threshold: Annotated[Optional[float], typer.Option(
                        "--threshold", help="positive (GIST) iff probability >= this",
                        show_default="each bundle's own, the one its SRs used")] = None,
                    fmt: Format = "table") -> None:
    """Live performance per bundle: AUC (95% CI), sensitivity/specificity, Brier, against the
    outcomes recorded with `eusdx audit outcome`."""
    from audit.formats import render_rows, with_intervals
    from audit.queries import Filters

    _check_format(fmt)
    f = Filters.from_text(since=since, until=until, ae=ae, label=label, bundle=bundle, limit=0)
    rows = _reader(ctx).performance(f, threshold=threshold)
    typer.echo(render_rows(rows if fmt == "json" else with_intervals(rows), fmt))


@audit_app.command("outcome")
def outcome_cmd(ctx: typer.Context,
                study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID")],
                truth: Annotated[str, typer.Option("--truth", help="GIST, leiomyoma or other")],
                source: Annotated[str, typer.Option(
                    "--source", help="where it comes from: pathology, surgery, ...")] = "pathology",
                note: Annotated[Optional[str], typer.Option("--note", show_default="none")] = None) -> None:
    """Record a study's reference diagnosis (appended; a later one supersedes it)."""
    from eusdx.errors import UsageError

    reader = _reader(ctx)
    try:
        reader.log.outcome(study_uid=study_uid, truth=truth, source=source,
                           recorded_by=reader.actor, note=note)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    typer.echo(f"outcome {truth} ({source}) recorded for {study_uid}")


@audit_app.command("atna-send")
def atna_send_cmd(
    ctx: typer.Context, since: Since = None, until: Until = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", show_default="none: send them", help="write the syslog messages to this file (RFC 5425 octet-counted frames) "
        "instead of sending them")] = None,
) -> None:
    """Re-send the audit trail of a period to the ATNA audit repository as DICOM audit messages
    (PS3.15 A.5), rebuilt from the audit log; the sender's cursor and spool are left alone."""
    import json

    from audit.atna.sender import AtnaConfig, context_from_settings, resend
    from audit.atna.syslog import SyslogClient
    from audit.queries import parse_when
    from cli.context import settings_from
    from eusdx.errors import UsageError

    settings = settings_from(ctx)
    start, end = parse_when(since, name="--since"), parse_when(until, name="--until")
    config = AtnaConfig.from_settings(settings)
    if out is None and config is None:
        raise UsageError("no audit repository configured (atna_repository); use --out FILE")
    reader = _reader(ctx)
    # Audited like every read of the log (its own row is a maintenance action: no message).
    reader.log.qa_event(actor=reader.actor, action="atna-resend", params={
        "since": since, "until": until, "to": "file" if out else str(config.endpoint if config
                                                                      else "")})
    client: SyslogClient
    if out is not None:
        client = _FileClient(out)
    else:
        assert config is not None
        client = config.client()
    try:
        result = resend(reader.log.engine, context_from_settings(settings), client, since=start,
                        until=end, batch_rows=settings.atna_batch_rows)
    finally:
        client.close()
    typer.echo(json.dumps(result, sort_keys=True))


class _FileClient:
    """Writes the messages as RFC 5425 frames to a file (what `atna-send --out` uses)."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()

    def send(self, messages: Any) -> int:
        for message in messages:
            self._fh.write(str(len(message)).encode("ascii") + b" " + message)
        return len(messages)

    def close(self) -> None:
        self._fh.close()


@audit_app.command("atna-status")
def atna_status_cmd(ctx: typer.Context) -> None:
    """The ATNA sender's cursor and the messages waiting in its spool."""
    import json

    from audit.atna.sender import AtnaSpool
    from cli.context import settings_from

    settings = settings_from(ctx)
    spool = AtnaSpool(settings.atna_spool_path)
    files, messages = spool.backlog()
    typer.echo(json.dumps({"repository": settings.atna_repository or None,
                           "cursor": spool.cursor(), "spool_files": files,
                           "spooled_messages": messages, "spool_dir": str(spool.directory)},
                          sort_keys=True))


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
