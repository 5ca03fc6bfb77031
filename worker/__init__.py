"""The analysis worker: Celery app and tasks, the embedded (no broker) consumer, the per-study pipeline,
SR building. Nothing is imported or configured at import time; entry points:

* ``worker.celery_app.make_app(settings)`` — the Celery app (``eusdx worker`` runs it);
* ``worker.embedded.start_embedded(settings)`` — in-process consumer; ``.enqueuer`` goes to the node;
* ``worker.pipeline.analyze_study(...)`` — one study, end to end (both paths call it).
"""

__all__ = [
    "celery_app",
    "deliveries",
    "embedded",
    "frames",
    "model_cache",
    "pipeline",
    "runtime",
    "sr",
    "tasks",
]
