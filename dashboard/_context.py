"""What every dashboard page needs: the audit log, settings, operations hooks, sessions, templates,
and the helpers that check a session's role and CSRF token and render a page."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from audit.log import AuditLog
from audit.queries import QaReader
from dashboard._security import csrf_ok, same_origin
from dashboard._session import COOKIE, Session, SessionSigner

if TYPE_CHECKING:
    from eusdx.config import Settings

__all__ = ["Operations", "Context", "Denied", "PREFIX", "QA", "ADMIN"]

log = logging.getLogger("dashboard")

PREFIX = "/ui"
QA = ("qa", "admin")
ADMIN = ("admin",)
_HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Operations:
    """Hooks into the running node, given by whoever mounts the dashboard (``eusdx serve``).

    Every field is optional; a page says plainly what it cannot show without one.

    registry
        The ``prometheus_client.CollectorRegistry`` served at ``/metrics``: the operations page
        shows its samples, so the figures are the ones Prometheus scrapes.
    sr_file
        ``sop_uid -> Path | None``: where the SR with that SOP Instance UID is kept (the outbox).
    rerun
        ``study_uid -> str``: queue the study for analysis again; returns a sentence for the page.
    resend
        ``study_uid -> str``: re-arm the study's dead-lettered exports; returns a sentence.
    """

    registry: Any = None
    sr_file: Callable[[str], Path | None] | None = None
    rerun: Callable[[str], str] | None = None
    resend: Callable[[str], str] | None = None


class Denied(Exception):
    """The session may not see this page (no session: to the login page; wrong role: 403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Context:
    """Shared state of the mounted dashboard."""

    def __init__(self, log_: AuditLog, settings: Settings, operations: Operations) -> None:
        self.log = log_
        self.settings = settings
        self.ops = operations
        self.signer = SessionSigner(settings.dashboard_session_key.get_secret_value(),
                                    minutes=settings.dashboard_session_minutes)
        self.env = Environment(loader=FileSystemLoader(_HERE / "templates"),
                               autoescape=select_autoescape(["html"]), trim_blocks=True,
                               lstrip_blocks=True)
        self.env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.1f} %"
        self.env.filters["num"] = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
        self.env.filters["ci"] = _ci_text
        self.env.globals["prefix"] = PREFIX
        self.last_verify: dict[str, Any] | None = None

    # --- sessions ----------------------------------------------------------------------------

    def session(self, request: Request, roles: tuple[str, ...]) -> Session:
        """The request's session if its role is one of ``roles``.

        Raises
        ------
        Denied
            401 without a valid session, 403 with a role that may not see the page.
        """
        session = self.signer.check(request.cookies.get(COOKIE))
        if session is None:
            raise Denied(401, "please log in")
        if session.role not in roles:
            raise Denied(403, f"the role {session.role!r} may not open this page "
                              f"(it needs {' or '.join(roles)})")
        return session

    def form_session(self, request: Request, form: Any, roles: tuple[str, ...]) -> Session:
        """:meth:`session` for a POSTed form, which must also carry the session's CSRF token
        and come from this origin."""
        session = self.session(request, roles)
        if not same_origin(request) or not csrf_ok(session.csrf, form.get("csrf")):
            raise Denied(403, "the form's security token is missing or stale; reload the page")
        return session

    def reader(self, session: Session) -> QaReader:
        return QaReader(self.log, f"ui:{session.name}")

    # --- responses ---------------------------------------------------------------------------

    def page(self, name: str, session: Session | None, *, status: int = 200,
             **values: Any) -> HTMLResponse:
        template = self.env.get_template(name)
        synthetic = values.pop("synthetic", None)
        html = template.render(session=session, synthetic=synthetic, **values)
        return HTMLResponse(html, status_code=status)

    def denied(self, request: Request, exc: Denied) -> Response:
        if exc.status == 401:
            target = request.url.path
            if request.url.query:
                target += "?" + request.url.query
            return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}",
                                    status_code=303)
        session = self.signer.check(request.cookies.get(COOKIE))
        return self.page("error.html", session, status=exc.status, title="Not allowed",
                         message=exc.detail)


def _ci_text(value: Any, digits: int = 3) -> str:
    if not value or value[0] is None:
        return "-"
    est, lo, hi = value
    if lo is None or hi is None:
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"
