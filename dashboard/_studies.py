"""Studies: the filtered, keyset-paged list; one study's page (timeline with durations, result per
image and lesion, key-image preview, SR download, feedback); the feedback forms."""

# No ``from __future__ import annotations``: FastAPI reads endpoint signatures at run time.
import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from audit.browse import NO_RESULT
from audit.errors import QueryError
from audit.log import STUDY_STATES, TRUTH_LABELS, VERDICTS
from audit.queries import Filters
from dashboard._context import PREFIX, QA, Context
from eusdx.uids import is_valid_uid
from dashboard._preview import (
    PreviewUnavailable,
    key_region,
    regions_from_sr,
    render_png,
    spool_instance,
)

__all__ = ["register", "timeline"]

_FILTERS = ("state", "since", "until", "result", "bundle", "accession")


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise QueryError("that is not a DICOM UID")
    return value


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """State transitions (and analyses / exports / feedback) in chain order, each with the seconds
    since the previous state transition and since the first event."""
    out: list[dict[str, Any]] = []
    first: dt.datetime | None = None
    previous: dt.datetime | None = None
    for e in events:
        if e["kind"] == "instance":
            continue
        when = _stamp(e["ts"])
        first = first or when
        if e["kind"] == "state":
            what = e["state"] + ("" if e.get("regular", True) else " (irregular)")
            detail = e.get("reason") or ""
        elif e["kind"] == "analysis":
            what = "analysis " + ("error" if e.get("error") else "result")
            detail = e.get("error") or (f"{e.get('label')} p={e.get('probability', 0):.3f} "
                                        f"by {e.get('bundle_version')}")
        elif e["kind"] == "export":
            what = f"export {e.get('status')}"
            detail = f"{e.get('destination')} attempt {e.get('attempt')}" + (
                f": {e['error']}" if e.get("error") else "")
        else:
            what = f"feedback: {e.get('feedback')}"
            detail = _feedback_text(e)
        out.append({"seq": e["seq"], "ts": e["ts"], "what": what, "detail": detail,
                    "since_previous": (when - previous).total_seconds() if previous else None,
                    "since_first": (when - first).total_seconds()})
        if e["kind"] == "state":
            previous = when
        previous = previous or when
    return out


def _feedback_text(e: dict[str, Any]) -> str:
    if e.get("feedback") == "verdict":
        text = str(e.get("verdict"))
        if e.get("corrected_label"):
            text += f" -> {e['corrected_label']}"
    else:
        text = f"{e.get('truth')} ({e.get('source')}" + (
            f", {e['diagnosed_on']})" if e.get("diagnosed_on") else ")")
    by = f" by {e.get('recorded_by')}"
    return text + by + (f": {e['comment']}" if e.get("comment") else "")


def _latest_result(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    results = [e for e in events if e["kind"] == "analysis" and not e.get("error")]
    if not results:
        return None
    latest = dict(results[-1])
    latest["lesions"] = json.loads(latest.get("lesions") or "[]")
    latest["timings"] = json.loads(latest.get("timings") or "{}")
    return latest


def register(router: APIRouter, ctx: Context) -> None:
    """Add the study pages to ``router``."""

    @router.get("/studies")
    def studies(request: Request, state: str = "", since: str = "", until: str = "",
                result: str = "", bundle: str = "", accession: str = "", cursor: str = "",
                size: int = 50) -> Response:
        session = ctx.session(request, QA)
        f = Filters.from_text(since=since, until=until, status=state, label=result,
                              bundle=bundle, accession=accession, limit=0)
        page = ctx.reader(session).studies_page(f, cursor=cursor or None, size=size)
        given = {"state": state, "since": since, "until": until, "result": result,
                 "bundle": bundle, "accession": accession}
        kept = {k: v for k, v in given.items() if v}
        next_url = None
        if page.next_cursor:
            next_url = f"{PREFIX}/studies?" + urlencode({**kept, "cursor": page.next_cursor,
                                                        "size": size})
        return ctx.page("studies.html", session, rows=page.rows, filters=given,
                        states=STUDY_STATES, results=("GIST", "leiomyoma", NO_RESULT),
                        next_url=next_url, first_url=f"{PREFIX}/studies?" + urlencode(kept),
                        paged=bool(cursor))

    @router.get("/studies/{study_uid}")
    def study(request: Request, study_uid: str, saved: str = "") -> Response:
        session = ctx.session(request, QA)
        shown = ctx.reader(session).show(_uid(study_uid))  # audited read of the study
        if shown is None:
            return ctx.page("error.html", session, status=404, title="Unknown study",
                            message="This study is not in the audit log.")
        events = shown["events"]
        feedback = [e for e in events if e["kind"] == "feedback"]
        latest = {f["feedback"]: f for f in feedback}
        return ctx.page(
            "study.html", session, study=shown["study"] or {"study_uid": study_uid},
            timeline=timeline(events), result=_latest_result(events), feedback=feedback,
            latest=latest, csrf=session.csrf, verdicts=VERDICTS, truths=TRUTH_LABELS,
            saved=saved, today=dt.datetime.now(dt.timezone.utc).date().isoformat())

    def _sr_path(sop_uid: str | None) -> Any:
        if not sop_uid or ctx.ops.sr_file is None:
            return None
        return ctx.ops.sr_file(sop_uid)

    @router.get("/studies/{study_uid}/preview.png")
    def preview(request: Request, study_uid: str) -> Response:
        session = ctx.session(request, QA)
        shown = ctx.reader(session).show(_uid(study_uid))  # audited like the study page
        result = _latest_result(shown["events"]) if shown else None
        try:
            if result is None:
                raise PreviewUnavailable("the study has no result, so there is no key image")
            path = _sr_path(result.get("sr_sop_uid"))
            if path is None or not path.is_file():
                raise PreviewUnavailable("the SR is no longer kept here, so its ROI cannot be "
                                         "drawn")
            import pydicom

            region = key_region(regions_from_sr(pydicom.dcmread(path)), result.get("probability"))
            if region is None:
                raise PreviewUnavailable("the SR holds no image region")
            caption = (f"{region.label} p={region.probability:.3f} (SR, decision support)"
                       if region.probability is not None else f"{region.label} (SR)")
            png = render_png(spool_instance(ctx.settings.spool_dir, study_uid, region.sop_uid),
                             region, caption=caption)
        except PreviewUnavailable as exc:
            return Response(str(exc), status_code=404, media_type="text/plain")
        return Response(png, media_type="image/png")

    @router.get("/studies/{study_uid}/sr/{sop_uid}.dcm")
    def sr_download(request: Request, study_uid: str, sop_uid: str) -> Response:
        session = ctx.session(request, QA)
        ctx.log.qa_event(actor=f"ui:{session.name}", action="ui-sr-download",
                         params={"study_uid": _uid(study_uid), "sop_uid": _uid(sop_uid)})
        path = _sr_path(sop_uid)
        if path is None or not path.is_file():
            return ctx.page("error.html", session, status=404, title="SR not kept here",
                            message="The SR was sent and is no longer kept in the outbox; "
                                    "retrieve it from PACS.")
        return FileResponse(path, media_type="application/dicom",
                            filename=f"{sop_uid}.dcm")

    async def _feedback(request: Request, study_uid: str, kind: str) -> Response:
        form = await request.form()
        session = ctx.form_session(request, form, QA)
        uid = _uid(study_uid)
        shown = ctx.reader(session).show(uid)
        if shown is None:
            raise QueryError("feedback needs a study the audit log knows")
        result = _latest_result(shown["events"])
        text = {k: (str(form.get(k, "")).strip() or None) for k in (
            "verdict", "corrected_label", "truth", "diagnosed_on", "source", "comment")}
        if text["comment"] and len(text["comment"]) > 2000:
            raise QueryError("the comment is longer than 2000 characters")
        try:
            if kind == "verdict":
                ctx.log.feedback(study_uid=uid, kind="verdict", verdict=text["verdict"],
                                 corrected_label=text["corrected_label"]
                                 if text["verdict"] == "correct" else None,
                                 comment=text["comment"], recorded_by=f"ui:{session.name}",
                                 role=session.role,
                                 bundle_version=result["bundle_version"] if result else None)
            else:
                ctx.log.feedback(study_uid=uid, kind="pathology", truth=text["truth"],
                                 diagnosed_on=text["diagnosed_on"], source=text["source"],
                                 comment=text["comment"], recorded_by=f"ui:{session.name}",
                                 role=session.role)
        except ValueError as exc:
            raise QueryError(str(exc)) from exc
        return RedirectResponse(f"{PREFIX}/studies/{uid}?saved={kind}#feedback", status_code=303)

    @router.post("/studies/{study_uid}/verdict")
    async def verdict(request: Request, study_uid: str) -> Response:
        return await _feedback(request, study_uid, "verdict")

    @router.post("/studies/{study_uid}/pathology")
    async def pathology(request: Request, study_uid: str) -> Response:
        return await _feedback(request, study_uid, "pathology")
