"""Count how often one queue message was delivered without its task finishing.

``task_reject_on_worker_lost`` puts the message of a killed worker back in the queue; a study that kills
its worker every time (a poison study) would loop forever. Each delivery increments a counter keyed by
the message (Celery task id); every way a task *finishes* (success, recorded failure, retry) clears it.
So the counter is the number of consecutive lost deliveries plus one, and ``WorkerRuntime.process``
dead-letters the study above ``Settings.task_max_deliveries``.

With a Redis broker the counter lives in Redis (shared by every worker host); otherwise in files under
the queue folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from eusdx.durable import atomic_write_text, remove_durably

__all__ = ["DeliveryCounter", "FileDeliveryCounter", "RedisDeliveryCounter", "counter_for"]

_TTL_SECONDS = 7 * 24 * 3600
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class DeliveryCounter(Protocol):
    """``incr`` returns the delivery number (1 for the first); ``clear`` forgets the key."""

    def incr(self, key: str) -> int: ...
    def clear(self, key: str) -> None: ...


class RedisDeliveryCounter:
    """Counter in Redis keys ``eusdx:deliveries:<key>`` (expire after a week)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    def incr(self, key: str) -> int:
        name = f"eusdx:deliveries:{key}"
        pipe = self._redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, _TTL_SECONDS)
        count, _ = pipe.execute()
        return int(count)

    def clear(self, key: str) -> None:
        self._redis.delete(f"eusdx:deliveries:{key}")


class FileDeliveryCounter:
    """Counter in ``<folder>/<key>`` files (one message is handled by one process at a time)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / _SAFE.sub("_", key)

    def incr(self, key: str) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        try:
            count = int(path.read_text() or "0") + 1
        except (FileNotFoundError, ValueError):
            count = 1
        atomic_write_text(path, str(count))  # the count must survive the crash it is there to detect
        return count

    def clear(self, key: str) -> None:
        remove_durably(self._path(key))


def counter_for(broker_url: str, queue_dir: Path) -> DeliveryCounter:
    """Redis counter for ``redis://``/``rediss://`` brokers, file counter otherwise."""
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDeliveryCounter(broker_url)
    return FileDeliveryCounter(Path(queue_dir) / "deliveries")
