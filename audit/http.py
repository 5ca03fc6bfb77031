"""HTTP API: the radiology worklist feed (JSON and FHIR R4) and the QA queries of the CLI.

``create_app(log, settings)`` builds the FastAPI app; the serve command mounts the node's health
and metrics routers through ``extra_routers``. Every endpoint but the OpenAPI schema needs a bearer
token (401 when missing or unknown, 403 when its role does not allow the endpoint); every read is
recorded as a ``qa_event`` naming the token's name. Errors are ``application/problem+json``
(RFC 9457).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures at run
# time, and they refer to dependencies built inside create_app.
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.auth import Principal, TokenTable
from audit.errors import AuditUnavailable, QueryError
from audit.fhir import worklist_bundle
from audit.formats import render_rows
from audit.log import AuditLog
from audit.queries import Filters, QaReader

if TYPE_CHECKING:
    from eusdx.config import Settings

__all__ = ["create_app", "ApiProblem", "PROBLEM_JSON"]

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
_WORKLIST_ROLES = ("worklist", "qa", "admin")
_QA_ROLES = ("qa", "admin")
_ADMIN_ROLES = ("admin",)


class OutcomeIn(BaseModel):
    """A reference diagnosis entered by QA."""

    model_config = ConfigDict(extra="forbid")

    study_uid: str = Field(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
    truth: Literal["GIST", "leiomyoma", "other"]
    source: str = Field("pathology", min_length=1, max_length=32)
    note: str | None = Field(None, max_length=2000)


class ApiProblem(Exception):
    """An error answered as problem+json."""

    def __init__(self, status: int, title: str, detail: str, *, slug: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = f"urn:eusdx:problem:{slug}" if slug else "about:blank"
        self.headers = headers or {}


def _problem(status: int, title: str, detail: str, *, type_: str = "about:blank",
             instance: str | None = None, headers: dict[str, str] | None = None,
             extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return _problem(exc.status, exc.title, exc.detail, type_=exc.type,
                        instance=request.url.path, headers=exc.headers)

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> JSONResponse:
        return _problem(400, "Invalid query", str(exc), type_="urn:eusdx:problem:invalid-query",
                        instance=request.url.path)

    @app.exception_handler(AuditUnavailable)
    async def _unavailable(request: Request, exc: AuditUnavailable) -> JSONResponse:
        return _problem(503, "Audit database unavailable", str(exc),
                        type_="urn:eusdx:problem:audit-unavailable", instance=request.url.path,
                        headers={"Retry-After": "30"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return _problem(422, "Invalid request", detail, type_="urn:eusdx:problem:validation",
                        instance=request.url.path, extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from http import HTTPStatus

        try:
            title = HTTPStatus(exc.status_code).phrase
        except ValueError:
            title = "Error"
        return _problem(exc.status_code, title, str(exc.detail), instance=request.url.path,
                        headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return _problem(500, "Internal Server Error", "unexpected error; see the server log",
                        instance=request.url.path)


#: ``qa_events`` action of a request refused for a missing or unknown bearer token (ATNA: User
#: Authentication, outcome 4). The token itself is never logged or audited.
API_AUTH_FAILED_ACTION = "api-auth-failed"


def _auth(tokens: TokenTable, log: AuditLog) -> Callable[..., Callable[..., Principal]]:
    bearer = HTTPBearer(auto_error=False, description="token configured in api_tokens")
    challenge = {"WWW-Authenticate": 'Bearer realm="eusdx"'}

    def refused(request: Request, reason: str) -> None:
        # audited before the 401 goes out; an audit outage answers 503 (problem handler), never a
        # silent pass
        log.qa_event(actor="api:-", action=API_AUTH_FAILED_ACTION,
                     params={"path": request.url.path[:200], "reason": reason})

    def require(*roles: str) -> Callable[..., Principal]:
        def dependency(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Principal:
            if credentials is None or not credentials.credentials:
                refused(request, "no bearer token")
                raise ApiProblem(401, "Unauthorized", "a bearer token is required",
                                 slug="unauthorized", headers=challenge)
            principal = tokens.match(credentials.credentials)
            if principal is None:
                refused(request, "unknown bearer token")
                raise ApiProblem(401, "Unauthorized", "the bearer token is not valid",
                                 slug="unauthorized",
                                 headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            if principal.role not in roles:
                raise ApiProblem(403, "Forbidden",
                                 f"role {principal.role!r} may not use this endpoint "
                                 f"(needs one of {', '.join(roles)})", slug="forbidden")
            return principal

        return dependency

    return require


def _filters(
    since: Annotated[str | None, Query(description="from this UTC date/time (ISO 8601)")] = None,
    until: Annotated[str | None, Query(description="before this UTC date/time (ISO 8601)")] = None,
    ae: Annotated[str | None, Query(max_length=64, description="sending AE title")] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    bundle: Annotated[str | None, Query(max_length=128, description="bundle version")] = None,
    accession: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=0, le=100_000, description="0 = all")] = 1000,
) -> Filters:
    return Filters.from_text(since=since, until=until, ae=ae, status=status, label=label,
                             bundle=bundle, accession=accession, limit=limit)


def _listing(rows: list[dict[str, Any]], fmt: str) -> Response:
    if fmt == "csv":
        return PlainTextResponse(render_rows(rows, "csv") + "\n", media_type="text/csv")
    return JSONResponse({"items": rows, "count": len(rows)})


def create_app(log: AuditLog, settings: "Settings", *,
               extra_routers: Sequence[APIRouter] | None = None) -> FastAPI:
    """Build the HTTP API.

    Parameters
    ----------
    log
        The process's audit log (reads and qa_event writes go through it).
    settings
        ``eusdx.config.Settings``: ``api_tokens`` and ``gist_priority_threshold`` are used.
    extra_routers
        Routers mounted as they are (the node's ``/healthz`` and ``/metrics``).

    Raises
    ------
    eusdx.errors.ConfigError
        An ``api_tokens`` entry is malformed.
    """
    tokens = TokenTable(settings.api_tokens)
    threshold = float(settings.gist_priority_threshold)
    require = _auth(tokens, log)
    app = FastAPI(
        title="eusdx worklist and QA API",
        version="1",
        description="Decision-support results (GIST vs leiomyoma) and the audit log. "
                    "Results are preliminary and not verified by a physician.",
    )
    _install_problem_handlers(app)

    def reader(principal: Principal) -> QaReader:
        return QaReader(log, f"api:{principal.name}")

    Fmt = Annotated[str, Query(pattern="^(json|csv)$", description="json or csv")]
    Cursor = Annotated[int, Query(ge=0, description="last seq already seen")]
    PageLimit = Annotated[int, Query(ge=1, le=1000)]

    v1 = APIRouter(prefix="/api/v1")

    @v1.get("/worklist", summary="Results since a cursor (JSON, or FHIR with format=fhir)")
    def worklist(principal: Annotated[Principal, Depends(require(*_WORKLIST_ROLES))],
                 cursor: Cursor = 0, limit: PageLimit = 100,
                 format: Annotated[str, Query(pattern="^(json|fhir)$")] = "json") -> Response:
        feed = reader(principal).worklist(cursor=cursor, limit=limit, threshold=threshold)
        if format == "fhir":
            return _fhir(feed, limit)
        return JSONResponse(feed)

    @v1.get("/worklist/fhir", summary="Results since a cursor as a FHIR R4 Bundle")
    def worklist_fhir(principal: Annotated[Principal, Depends(require(*_WORKLIST_ROLES))],
                      cursor: Cursor = 0, limit: PageLimit = 100) -> Response:
        feed = reader(principal).worklist(cursor=cursor, limit=limit, threshold=threshold)
        return _fhir(feed, limit)

    def _fhir(feed: dict[str, Any], limit: int) -> Response:
        next_url = f"/api/v1/worklist/fhir?cursor={feed['next_cursor']}&limit={limit}"
        return JSONResponse(worklist_bundle(feed, next_url=next_url), media_type=FHIR_JSON)

    qa = Depends(require(*_QA_ROLES))

    def _query_route(name: str, summary: str) -> None:
        def endpoint(principal: Annotated[Principal, qa],
                     f: Annotated[Filters, Depends(_filters)], format: Fmt = "json") -> Response:
            return _listing(reader(principal).query(name, f), format)

        endpoint.__name__ = f"audit_{name}"
        v1.add_api_route(f"/audit/{name}", endpoint, methods=["GET"], summary=summary)

    _query_route("studies", "Studies and their current state")
    _query_route("failures", "Rejections, failed studies, analysis errors, failed exports")
    _query_route("timings", "Per-stage seconds of each analysis")
    _query_route("exports", "The outbox: latest export status per study and destination")

    @v1.get("/audit/stats", summary="Volumes, failure rates, p50/p95 per stage, outbox depth")
    def audit_stats(principal: Annotated[Principal, qa],
                    f: Annotated[Filters, Depends(_filters)]) -> dict[str, Any]:
        result: dict[str, Any] = reader(principal).query("stats", f)
        return result

    @v1.get("/audit/studies/{study_uid}", summary="One study's state and timeline")
    def audit_show(principal: Annotated[Principal, qa], study_uid: str) -> dict[str, Any]:
        result = reader(principal).show(study_uid)
        if result is None:
            raise ApiProblem(404, "Not Found", f"study {study_uid} is not in the audit log",
                             slug="unknown-study")
        return result

    @v1.get("/audit/verify", summary="Recompute the hash chain and check the projections")
    def audit_verify(principal: Annotated[Principal, qa]) -> dict[str, Any]:
        from audit.anchor import AnchorError, anchor_map, installation_anchors

        try:
            anchors = installation_anchors(settings)
        except AnchorError as exc:  # a forged or edited anchor is itself a finding
            return {"ok": False, "broken": {"table": "anchor", "seq": None, "problem": str(exc)}}
        check = reader(principal).verify(anchor_map(anchors))
        chain = check.chain
        broken = None
        if chain.broken is not None:
            broken = {"table": chain.broken.table, "seq": chain.broken.seq,
                      "problem": chain.broken.problem}
        return {"ok": check.ok, "rows": chain.rows, "last_seq": chain.last_seq,
                "last_hash": chain.last_hash, "broken": broken, "anchors": len(anchors),
                "projection_mismatches": [str(m) for m in check.projections]}

    @v1.get("/audit/performance",
            summary="Live performance per bundle against recorded outcomes")
    def audit_performance(principal: Annotated[Principal, qa],
                          f: Annotated[Filters, Depends(_filters)],
                          threshold: Annotated[float | None, Query(
                              gt=0, le=1, description="default: each bundle's recorded threshold")] = None,
                          format: Fmt = "json") -> Response:
        return _listing(reader(principal).performance(f, threshold=threshold), format)

    @v1.post("/audit/outcomes", status_code=201,
             summary="Record a study's reference diagnosis (qa, admin)")
    def audit_outcome(principal: Annotated[Principal, qa], body: OutcomeIn) -> dict[str, str]:
        try:
            log.outcome(study_uid=body.study_uid, truth=body.truth, source=body.source,
                         recorded_by=f"api:{principal.name}", note=body.note)
        except ValueError as exc:
            raise QueryError(str(exc)) from exc
        return {"study_uid": body.study_uid, "truth": body.truth, "status": "recorded"}

    @v1.get("/audit/qa-events", summary="Who read what (admin only)")
    def audit_qa_events(principal: Annotated[Principal, Depends(require(*_ADMIN_ROLES))],
                        f: Annotated[Filters, Depends(_filters)], format: Fmt = "json"
                        ) -> Response:
        return _listing(reader(principal).qa_events(f), format)

    app.include_router(v1)
    for router in extra_routers or ():
        app.include_router(router)
    return app
