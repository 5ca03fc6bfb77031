"""``eusdx serve``: the daemon. DICOM listener + study assembler + export runner + HTTP API, and
(embedded default, no broker) the in-process analysis worker.

SIGTERM/SIGINT stop it gracefully: stop accepting associations, let in-flight ones finish,
stop the threads; open studies stay in the spool and resume at the next start.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import typer

from cli.context import settings_from

__all__ = ["register", "build_enqueuer", "run_serve"]

log = logging.getLogger(__name__)


def build_enqueuer(settings: Any, *, worker: bool) -> tuple[Any, Any]:
    """Return ``(enqueuer, service)``: Celery by task name when ``broker_url`` is set; otherwise
    the worker's embedded queue, with its consumer thread when ``worker`` (``service`` is what to
    stop at exit, or ``None``)."""
    if settings.broker_url:
        from dicom_node.enqueue import CeleryEnqueuer

        return CeleryEnqueuer(settings.broker_url), None
    if worker:
        from worker.embedded import start_embedded

        service = start_embedded(settings)
        return service.enqueuer, service
    from worker.embedded import EmbeddedEnqueuer, EmbeddedQueue

    return EmbeddedEnqueuer(EmbeddedQueue(settings.queue_dir)), None


def _http_thread(app: Any, host: str, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off")
    # uvicorn installs signal handlers only on the main thread; ours (SIGTERM/SIGINT) rule.
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="eusdx-http", daemon=True)
    thread.start()
    return server, thread


def _application_activity(audit: Any, settings: Any, what: str) -> None:
    """Record that the application started or stopped (an ATNA Application Activity message)."""
    import getpass

    from audit import AuditUnavailable
    from audit.atna.events import APPLICATION_START_ACTION, APPLICATION_STOP_ACTION

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    action = APPLICATION_START_ACTION if what == "start" else APPLICATION_STOP_ACTION
    try:
        audit.qa_event(actor="eusdx-serve", action=action,
                       params={"user": user, "ae_title": settings.ae_title})
    except AuditUnavailable as exc:
        if what == "start":
            raise
        log.error("application stop not recorded: %s", exc)


def _start_atna(audit: Any, settings: Any) -> Any:
    """The ATNA sender thread when ``atna_repository`` is set, else ``None``."""
    from audit.atna.sender import AtnaConfig, AtnaSender

    config = AtnaConfig.from_settings(settings)
    if config is None:
        return None
    sender = AtnaSender(audit.engine, config).start()
    log.info("ATNA: audit messages go to %s (spool %s)", config.endpoint, config.spool_dir)
    return sender


def run_serve(settings: Any, *, worker: bool = True, http: bool = True) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code.

    Raises
    ------
    ConfigError
        The audit HMAC key is the built-in one (or a placeholder) and ``dev_mode`` is off.
    """
    from eusdx.keys import require_own_key

    require_own_key(settings, "eusdx serve")
    from audit import AuditLog
    from dicom_node.app import Node
    from dicom_node.http import node_router

    # Each association has two busy threads (pynetdicom's DUL reader and the handler); with
    # the default 5 ms GIL switch interval a C-STORE response waits on the reader's time slice.
    # 0.5 ms measured ~20 % more instances/s with DCMTK storescu (bench/ingest.py).
    sys.setswitchinterval(0.0005)
    audit = AuditLog.from_settings(settings)
    audit.ensure_schema()
    from audit.anchor import AnchorWriter

    anchors = AnchorWriter(audit.engine, settings).start()
    _application_activity(audit, settings, "start")
    atna = _start_atna(audit, settings)
    enqueuer, service = build_enqueuer(settings, worker=worker)
    node = Node(settings, audit, enqueuer)
    if atna is not None:
        node.metrics.track_atna_backlog(lambda: atna.spool.backlog()[1])
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    http_server = None
    if http:
        # No fallback without the QA API or the dashboard: a broken install must fail loudly, not serve less.
        from audit.http import create_app
        from dashboard import mount_dashboard
        from cli.dashboard_ops import node_operations

        app = create_app(audit, settings, extra_routers=[node_router(node)])
        mount_dashboard(app, audit, settings, node_operations(node, audit, enqueuer, settings))
        http_server, _ = _http_thread(app, settings.http_host, settings.http_port)
    print(f"eusdx serve: {settings.ae_title} listening on {settings.dicom_host}:{node.port}",
          flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
        if service is not None:
            service.stop()
        if http_server is not None:
            http_server.should_exit = True
        anchors.stop()
        _application_activity(audit, settings, "stop")
        if atna is not None:
            atna.stop(flush=True)  # the stop event goes out too, or stays spooled
        audit.close()
    return 0


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        worker: bool = typer.Option(
            True, "--worker/--no-worker",
            help="embedded mode: also run the analysis consumer in this process",
        ),
        http: bool = typer.Option(True, "--http/--no-http", help="serve /healthz, /metrics, API"),
    ) -> None:
        """Run the DICOM node (and, embedded, the worker) until SIGTERM/SIGINT."""
        settings = settings_from(ctx)
        raise typer.Exit(run_serve(settings, worker=worker, http=http))
