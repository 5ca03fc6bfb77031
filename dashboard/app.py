"""Mount the dashboard on the HTTP app: sessions, login and logout, security headers, static files.

Pages live in :mod:`dashboard._studies` (studies, study, feedback) and :mod:`dashboard._oversight`
(failures, live performance, operations). Everything is server-rendered (Jinja2, autoescaped);
the only script is none at all, so the CSP forbids inline and foreign scripts.
"""

# No ``from __future__ import annotations``: FastAPI reads endpoint signatures at run time.
import asyncio
import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from audit.auth import TokenTable
from audit.errors import AuditUnavailable, QueryError
from audit.log import AuditLog
from dashboard._context import PREFIX, Context, Denied, Operations
from dashboard._security import SecurityHeaders
from dashboard._session import COOKIE, LOGIN_COOKIE

if TYPE_CHECKING:
    from eusdx.config import Settings

__all__ = ["mount_dashboard"]

logger = logging.getLogger("dashboard")
_FAILED_LOGIN_DELAY_S = 0.5


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard (no scheme, no host, no ``//``) may be a redirect target."""
    if not target:
        return f"{PREFIX}/studies"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") or "\\" in target:
        return f"{PREFIX}/studies"
    return target


async def _delegate(handler: Any, request: Request, exc: Exception) -> Response:
    """Run the app's own handler (sync or async) for errors outside the dashboard."""
    result = handler(request, exc)
    if inspect.isawaitable(result):
        result = await result
    return cast(Response, result)


def _cookie_secure(ctx: Context, request: Request) -> bool:
    return request.url.scheme == "https" or bool(ctx.settings.dashboard_secure_cookie)


def mount_dashboard(app: FastAPI, log: AuditLog, settings: "Settings",
                    operations: Operations | None = None) -> Context:
    """Add the dashboard's routes under ``/ui`` to ``app`` (the audit HTTP app).

    Parameters
    ----------
    app
        The FastAPI app of :func:`audit.http.create_app`.
    log
        The process's audit log: every page read and every feedback goes through it.
    settings
        ``api_tokens`` (who may log in, with which role) and the ``dashboard_*`` keys.
    operations
        Hooks into the running node (:class:`dashboard.Operations`); pages that need a missing
        hook say so.

    Raises
    ------
    eusdx.errors.ConfigError
        An ``api_tokens`` entry is malformed.
    """
    from dashboard import _oversight, _studies

    tokens = TokenTable(settings.api_tokens)
    ctx = Context(log, settings, operations or Operations())
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("")
    @router.get("/")
    def home(request: Request) -> Response:
        session = ctx.signer.check(request.cookies.get(COOKIE))
        if session is None:
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        if session.role == "worklist":
            return ctx.page("error.html", session, status=403, title="No dashboard pages",
                            message="The worklist role reads results through the worklist "
                                    "feed (/api/v1/worklist); the dashboard is for QA and "
                                    "admin roles.")
        return RedirectResponse(f"{PREFIX}/studies", status_code=303)

    @router.get("/login")
    def login_form(request: Request, next: str | None = None) -> Response:
        cookie, nonce = ctx.signer.login_token()
        response = ctx.page("login.html", None, csrf=nonce, next=_safe_next(next), error=None)
        response.set_cookie(LOGIN_COOKIE, cookie, httponly=True, samesite="strict",
                            secure=_cookie_secure(ctx, request), path=f"{PREFIX}/login",
                            max_age=1800)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        target = _safe_next(str(form.get("next") or ""))
        if not ctx.signer.login_ok(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf", ""))):
            return ctx.page("error.html", None, status=403, title="Login form expired",
                            message="The login form's security token did not match; open the "
                                    "login page again.")
        principal = tokens.match(str(form.get("token", "")))
        if principal is None:
            # The token is never logged or audited; only that a login failed.
            log.qa_event(actor="ui:-", action="ui-login-failed", params={})
            await asyncio.sleep(_FAILED_LOGIN_DELAY_S)  # slows guessing, not the server
            cookie, nonce = ctx.signer.login_token()
            failed = ctx.page("login.html", None, status=401, csrf=nonce, next=target,
                              error="That token is not valid.")
            failed.set_cookie(LOGIN_COOKIE, cookie, httponly=True, samesite="strict",
                              secure=_cookie_secure(ctx, request), path=f"{PREFIX}/login",
                              max_age=1800)
            return failed
        value, session = ctx.signer.issue(principal.name, principal.role)
        log.qa_event(actor=f"ui:{principal.name}", action="ui-login",
                     params={"role": principal.role, "session": session.id})
        response: Response = RedirectResponse(target if principal.role != "worklist" else f"{PREFIX}/",
                                    status_code=303)
        response.set_cookie(COOKIE, value, httponly=True, samesite="strict",
                            secure=_cookie_secure(ctx, request), path=PREFIX,
                            max_age=ctx.signer.lifetime)
        response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        session = ctx.form_session(request, form, ("worklist", "qa", "admin"))
        log.qa_event(actor=f"ui:{session.name}", action="ui-logout", params={"session": session.id})
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    _studies.register(router, ctx)
    _oversight.register(router, ctx)

    @app.exception_handler(Denied)
    async def _denied(request: Request, exc: Denied) -> Response:
        return ctx.denied(request, exc)

    previous_query_error = app.exception_handlers.get(QueryError)
    previous_unavailable = app.exception_handlers.get(AuditUnavailable)

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> Response:
        if request.url.path.startswith(PREFIX) or previous_query_error is None:
            session = ctx.signer.check(request.cookies.get(COOKIE))
            return ctx.page("error.html", session, status=400, title="Cannot show that",
                            message=str(exc))
        return await _delegate(previous_query_error, request, exc)

    @app.exception_handler(AuditUnavailable)
    async def _unavailable(request: Request, exc: AuditUnavailable) -> Response:
        if request.url.path.startswith(PREFIX) or previous_unavailable is None:
            return ctx.page("error.html", None, status=503, title="Audit database unavailable",
                            message=str(exc))
        return await _delegate(previous_unavailable, request, exc)

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="dashboard-static")
    app.add_middleware(SecurityHeaders, prefix=PREFIX)
    return ctx
