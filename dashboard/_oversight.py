"""Failures and dead letters (re-run / re-send for admin), live performance, and operations."""

# No ``from __future__ import annotations``: FastAPI reads endpoint signatures at run time.
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from audit.errors import QueryError
from audit.queries import Filters
from dashboard._context import ADMIN, PREFIX, QA, Context
from dashboard._live import calibration_png, live_table, load_validation
from eusdx.durable import sha256_file
from eusdx.failures import FailureClass

__all__ = ["register", "failure_class", "bundle_info", "registry_samples"]

_CLASSES = tuple(c.value for c in FailureClass)


def failure_class(reason: str | None) -> str:
    """The ``eusdx.failures`` class a stored reason starts with (``"<class>: ..."``), or
    ``unclassified`` for reasons written before the classes existed or by a peer."""
    if reason:
        head = reason.split(":", 1)[0].strip()
        if head in _CLASSES:
            return head
        if reason.startswith("dead-letter"):
            return "dead-letter"
    return "unclassified"


def bundle_info(bundle_dir: Path) -> dict[str, Any]:
    """Version, manifest SHA-256 and synthetic flag of the configured bundle (or why not)."""
    root = Path(bundle_dir)
    try:
        manifest_path = root / "manifest.json"
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"problem": f"no bundle at {root}"}
    except (OSError, ValueError) as exc:
        return {"problem": f"the bundle at {root} cannot be read ({type(exc).__name__})"}
    return {"version": manifest.get("version"), "sha256": sha256_file(manifest_path),
            "synthetic": config.get("synthetic"), "primary": config.get("primary"),
            "path": str(root.resolve())}


def registry_samples(registry: Any) -> list[dict[str, Any]]:
    """Every ``eusdx_*`` sample of a Prometheus registry (histogram buckets left out)."""
    if registry is None:
        return []
    out = []
    for family in registry.collect():
        for sample in family.samples:
            if not sample.name.startswith("eusdx_") or sample.name.endswith(("_bucket",
                                                                             "_created")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out.append({"name": sample.name, "labels": labels, "value": sample.value})
    return out


def _sample(samples: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in samples if s["name"] == name]


def register(router: APIRouter, ctx: Context) -> None:
    """Add the failures, performance and operations pages to ``router``."""

    @router.get("/failures")
    def failures(request: Request, since: str | None = None, until: str = "",
                 done: str = "") -> Response:
        session = ctx.session(request, QA)
        if since is None:  # first visit: the last 30 days; an emptied field means all time
            since = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=30)).isoformat()
        f = Filters.from_text(since=since, until=until, limit=500)
        data = ctx.reader(session).failures_overview(f)
        for row in data["failures"]:
            row["class"] = failure_class(row.get("reason"))
            row["attempts"] = data["attempts"].get(row.get("study_uid") or "", None)
        for row in data["dead_letters"]:
            row["class"] = failure_class(row.get("error")) if row.get("error") else "delivery"
        return ctx.page("failures.html", session, failures=data["failures"],
                        dead_letters=data["dead_letters"], csrf=session.csrf, done=done,
                        can_rerun=ctx.ops.rerun is not None, can_resend=ctx.ops.resend is not None,
                        since=since, until=until)

    async def _action(request: Request, name: str) -> Response:
        form = await request.form()
        session = ctx.form_session(request, form, ADMIN)
        uid = str(form.get("study_uid", ""))
        from dashboard._studies import _uid

        _uid(uid)
        hook = ctx.ops.rerun if name == "rerun" else ctx.ops.resend
        if hook is None:
            raise QueryError(f"{name} is not available in this process (no node attached)")
        # Audited before it runs, like every read: the record stands even if the action fails.
        ctx.log.qa_event(actor=f"ui:{session.name}", action=f"ui-{name}",
                         params={"study_uid": uid})
        message = hook(uid)
        from urllib.parse import quote

        return RedirectResponse(f"{PREFIX}/failures?done={quote(message)}", status_code=303)

    @router.post("/failures/rerun")
    async def rerun(request: Request) -> Response:
        return await _action(request, "rerun")

    @router.post("/failures/resend")
    async def resend(request: Request) -> Response:
        return await _action(request, "resend")

    def _live(session: Any, since: str, until: str, bundle: str, threshold: float | None) -> Any:
        """Live cells; ``threshold`` None = the configured bundle's decision threshold (the one its SRs
        used), 0.5 when the bundle does not record one."""
        validation, why = load_validation(ctx.settings.bundle)
        if threshold is None:
            threshold = validation.threshold if validation and validation.threshold is not None else 0.5
        if not 0.0 < threshold < 1.0:
            raise QueryError("the threshold must lie strictly between 0 and 1")
        f = Filters.from_text(since=since, until=until, bundle=bundle, limit=0)
        data = ctx.reader(session).analyses(f)
        return live_table(data, threshold=threshold, validation=validation), validation, why, threshold

    @router.get("/performance")
    def performance(request: Request, since: str = "", until: str = "", bundle: str = "",
                    threshold: float | None = None) -> Response:
        session = ctx.session(request, QA)
        cells, validation, why, threshold = _live(session, since, until, bundle, threshold)
        info = bundle_info(ctx.settings.bundle)
        return ctx.page("performance.html", session, cells=cells, validation=validation,
                        validation_problem=why, threshold=threshold, since=since, until=until,
                        bundle=bundle, synthetic=info.get("synthetic"))

    @router.get("/performance/calibration.png")
    def calibration(request: Request, bundle: str, month: str = "all",
                    threshold: float | None = None) -> Response:
        session = ctx.session(request, QA)
        cells, _validation, _why, _threshold = _live(session, "", "", bundle, threshold)
        cell = next((c for c in cells if c.bundle_version == bundle and c.month == month), None)
        png = calibration_png(cell, synthetic=bundle_info(ctx.settings.bundle).get("synthetic")
                              ) if cell else None
        if png is None:
            return Response("not enough outcomes of both kinds for a calibration plot",
                            status_code=404, media_type="text/plain")
        return Response(png, media_type="image/png")

    @router.get("/operations")
    def operations(request: Request) -> Response:
        session = ctx.session(request, QA)
        ctx.log.qa_event(actor=f"ui:{session.name}", action="ui-operations", params={})
        samples = registry_samples(ctx.ops.registry)
        spool = Path(ctx.settings.spool_dir)
        fill: dict[str, Any]
        try:
            usage = shutil.disk_usage(spool)
            fill = {"percent": 100.0 * usage.used / usage.total, "free_bytes": usage.free,
                    "limit": ctx.settings.spool_max_fill_percent}
        except OSError as exc:
            fill = {"problem": f"{spool}: {exc.strerror}"}
        return ctx.page(
            "operations.html", session, samples=samples, fill=fill,
            queue=_sample(samples, "eusdx_queue_depth"),
            outbox=_sample(samples, "eusdx_outbox_depth"),
            pending=_sample(samples, "eusdx_enqueue_pending"),
            spool_metric=_sample(samples, "eusdx_spool_fill_percent"),
            bundle=bundle_info(ctx.settings.bundle), verify=ctx.last_verify, csrf=session.csrf,
            has_registry=ctx.ops.registry is not None)

    @router.post("/operations/verify")
    async def verify(request: Request) -> Response:
        form = await request.form()
        session = ctx.form_session(request, form, QA)
        started = dt.datetime.now(dt.timezone.utc)
        check = ctx.reader(session).verify()
        ctx.last_verify = {
            "ok": check.ok, "rows": check.chain.rows, "last_seq": check.chain.last_seq,
            "broken": None if check.chain.broken is None else
            f"{check.chain.broken.table} seq {check.chain.broken.seq}: "
            f"{check.chain.broken.problem}",
            "mismatches": [str(m) for m in check.projections],
            "when": started.isoformat(timespec="seconds"), "by": session.name,
            "seconds": (dt.datetime.now(dt.timezone.utc) - started).total_seconds()}
        return RedirectResponse(f"{PREFIX}/operations#verify", status_code=303)
