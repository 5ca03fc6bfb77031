"""``/healthz`` and Prometheus ``/metrics`` of the node, as a FastAPI router to mount."""

# No ``from __future__ import annotations``: FastAPI reads endpoint signatures at run time.
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audit import AuditUnavailable

if TYPE_CHECKING:
    from dicom_node.app import Node  # for the type only: the router needs no import of the app

__all__ = ["node_router"]


def node_router(node: "Node") -> APIRouter:
    """Routes for one :class:`~dicom_node.app.Node`.

    ``GET /healthz`` answers 200 with a JSON summary when the listener runs and the audit store
    can be written, 503 otherwise (load balancers and Kubernetes probes read the code).
    ``GET /metrics`` is the Prometheus text exposition of the node's registry.
    ``POST /dicom-web/studies[/{uid}]`` is STOW-RS receive (:mod:`dicom_node.stow`).
    """
    from dicom_node.stow import stow_router

    router = APIRouter()
    router.include_router(stow_router(node))

    @router.get("/healthz")
    def healthz() -> JSONResponse:
        problems = []
        if not node.started:
            problems.append("dicom listener not running")
        try:
            node.audit.ping()
        except AuditUnavailable as exc:
            problems.append(f"audit: {exc}")
        body = {
            "status": "ok" if not problems else "unavailable",
            "problems": problems,
            "ae_title": node.settings.ae_title,
            "open_studies": len(node.assembler.open_studies()),
            "enqueue_pending": len(node.pending),
            "outbox": node.outbox.depth(),
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(node.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
