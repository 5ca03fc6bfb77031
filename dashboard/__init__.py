"""Web dashboard for QA staff and radiologists, served under ``/ui`` by the audit HTTP app.

Studies (keyset-paged list, study page with timeline, preview and SR), feedback (verdicts and
pathology, appended to the audit chain), failures and dead letters (re-run / re-send for admin),
live performance per bundle version and month, and operations. Sessions come from the API tokens
(:mod:`audit.auth`); every page read is an audit ``qa_event``.

``mount_dashboard(app, log, settings, operations)`` is the only entry point.
"""

from __future__ import annotations

from dashboard._context import Operations
from dashboard.app import mount_dashboard

__all__ = ["mount_dashboard", "Operations"]
