"""``eusdx worker``: run an analysis/export worker; ``eusdx worker reload``: pick up a new bundle."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from cli.context import settings_from
from eusdx.errors import EusdxError, UsageError

__all__ = ["register"]

worker_app = typer.Typer(
    help="Analysis worker (Celery with a broker; the embedded queue without one).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@worker_app.callback(invoke_without_command=True)
def worker_cmd(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option("--queues", "-Q", help="comma list of queues to consume")] = "analysis,export",
    concurrency: Annotated[int, typer.Option("--concurrency", help="pool processes (Celery)")] = 1,
    pool: Annotated[str, typer.Option("--pool", "-P", help="Celery pool: prefork or solo")] = "prefork",
    hostname: Annotated[str, typer.Option("--hostname", "-n", help="Celery node name")] = "eusdx@%h",
) -> None:
    """Run a worker until SIGTERM/SIGINT (finishing the current study first)."""
    if ctx.invoked_subcommand is not None:
        return
    if concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {concurrency}")
    if pool not in ("prefork", "solo"):
        raise UsageError(f"--pool must be prefork or solo, got {pool!r}")
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - {"analysis", "export"})
    if not wanted or unknown:
        raise UsageError(f"--queues must name analysis and/or export, got {queues!r}")
    settings = settings_from(ctx)
    from eusdx.keys import require_own_key

    require_own_key(settings, "eusdx worker")
    if "analysis" in wanted:
        # A worker that cannot load its bundle would fail every study: refuse to start instead.
        from models.bundle import BundleTrust, verify_bundle

        verify_bundle(settings.bundle, trust=BundleTrust.from_settings(settings))
    if settings.embedded_broker:
        _run_embedded(settings)
        return
    from worker.celery_app import make_app

    app = make_app(settings, preload_bundle="analysis" in wanted)
    app.worker_main(["worker", "-Q", ",".join(wanted), "-c", str(concurrency), "-P", pool,
                     "-n", hostname, "-l", settings.log_level, "--without-gossip", "--without-mingle"])


def _run_embedded(settings: Any) -> None:
    from worker.embedded import EmbeddedQueue, EmbeddedWorker
    from worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(settings)
    runtime.audit.ensure_schema()  # embedded default: the SQLite audit may be new (no-op when current)
    worker = EmbeddedWorker(runtime, EmbeddedQueue(settings.queue_dir))
    done = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda *_: runtime.cache.request_reload())
    typer.echo(f"embedded worker on {settings.queue_dir} (no broker configured)", err=True)
    worker.start()
    while not done.wait(1.0):
        if not worker.is_alive():
            raise EusdxError("embedded worker thread died")
    worker.stop()
    runtime.close()


@worker_app.command("reload")
def reload_cmd(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for worker replies")] = 5.0,
) -> None:
    """Make running workers load the bundle again (after `EUSDX_BUNDLE` changed), without dropping tasks."""
    settings = settings_from(ctx)
    if settings.embedded_broker:
        marker = settings.queue_dir / "reload"
        settings.queue_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
        typer.echo(f"reload requested ({marker})")
        return
    from worker.celery_app import make_app

    app = make_app(settings)
    # pool_restart replaces pool processes once they finish their current task; the new ones load
    # the bundle in worker_process_init.
    replies = app.control.broadcast("pool_restart", arguments={"reload": False}, reply=True, timeout=timeout)
    if not replies:
        raise EusdxError("no worker answered the reload request")
    for reply in replies:
        for node, answer in reply.items():
            typer.echo(f"{node}: {answer}")


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command group to the CLI."""
    app.add_typer(worker_app, name="worker")
