"""The model bundle of one worker process: loaded and verified once, warmed up, hot-reloaded.

A Celery worker loads it in ``worker_process_init`` (each pool process owns its copy); the embedded
consumer loads it when its thread starts. A new bundle is picked up between tasks, never during one:
``get()`` compares the bundle folder's fingerprint (resolved path and file modification times, so a
``current`` symlink switched to a new version counts) and reloads when it changed or when a reload was
requested (SIGHUP in the embedded worker; ``eusdx worker reload`` restarts Celery pool processes).
If the new bundle fails verification, the old one stays in service and the error is logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eusdx.errors import DataError

__all__ = ["ModelCache", "bundle_fingerprint", "trusted_loader", "warm_up"]

log = logging.getLogger(__name__)


def bundle_fingerprint(path: Path) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    """Identity of the bundle on disk: resolved folder and (name, size, mtime) of its top-level files."""
    resolved = Path(path).resolve()
    entries: list[tuple[str, int, int]] = []
    try:
        with os.scandir(resolved) as it:
            for entry in it:
                if entry.is_file():
                    st = entry.stat()
                    entries.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError:
        pass  # a missing bundle shows up when loading it, with the loader's message
    return str(resolved), tuple(sorted(entries))


def _warm_frame() -> np.ndarray:
    # A gray speckle square: enough for the backbone and preprocessing to allocate their buffers.
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(256, 256), dtype=np.uint8)


def warm_up(bundle: Any, device: str) -> float:
    """Run one batch through the bundle so that the first study does not pay for lazy init.

    Returns the seconds it took. A bundle that rejects the synthetic frame (no sector, no lesion) is
    still warm up to that point; that rejection is expected and not an error.
    """
    start = time.perf_counter()
    hook = getattr(bundle, "warm_up", None)
    try:
        if callable(hook):
            hook(device=device)
        else:
            from models.bundle import Frame

            bundle.predict([Frame(pixels=_warm_frame(), key="warm-up")], device=device)
    except DataError as exc:
        log.debug("warm-up frame rejected by the bundle (expected): %s", exc)
    return time.perf_counter() - start


def trusted_loader(settings: Any) -> Callable[[Path], Any]:
    """``load_bundle`` with the origin check of ``settings`` (trusted keys, pin, dev_mode).

    The trust is read at each load, so a configuration without trusted keys fails the load (a
    ``BundleError``, which the worker records per study) rather than the worker's construction.
    """

    def load(path: Path) -> Any:
        from eusdx.errors import ConfigError
        from models.bundle import BundleError, BundleTrust, load_bundle

        try:
            trust = BundleTrust.from_settings(settings)
        except ConfigError as exc:
            raise BundleError(str(exc)) from exc
        return load_bundle(path, trust=trust)

    return load


class ModelCache:
    """Holds the process's bundle; thread-safe.

    Parameters
    ----------
    path
        ``Settings.bundle``.
    device
        Resolved device (``cpu``/``cuda``).
    loader
        ``models.bundle.load_bundle`` (verifies every file's SHA-256); injectable for tests.
    warm
        Warm the bundle up after each load.
    processes
        ``Settings.analysis_processes``, handed to ``Bundle.use_processes`` (None: the bundle's
        default, every usable core).
    """

    def __init__(
        self,
        path: Path,
        device: str,
        *,
        loader: Callable[[Path], Any] | None = None,
        warm: bool = True,
        processes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.device = device
        self._loader = loader
        self._warm = warm
        self._processes = processes
        self._lock = threading.Lock()
        self._bundle: Any = None
        self._fingerprint: tuple[str, tuple[tuple[str, int, int], ...]] | None = None
        self._reload_requested = threading.Event()
        self.loads = 0
        self.warm_seconds: float | None = None

    def _load(self) -> Any:
        loader = self._loader
        if loader is None:
            from models.bundle import load_bundle

            loader = load_bundle
        fingerprint = bundle_fingerprint(self.path)
        bundle = loader(self.path)
        use_processes = getattr(bundle, "use_processes", None)
        if self._processes is not None and callable(use_processes):
            use_processes(self._processes)
        if self._warm:
            self.warm_seconds = warm_up(bundle, self.device)
        self._bundle, self._fingerprint = bundle, fingerprint
        self.loads += 1
        log.info("bundle %s loaded from %s on %s", getattr(bundle, "version", "?"), self.path, self.device)
        return bundle

    def request_reload(self) -> None:
        """Reload before the next task (safe to call from a signal handler)."""
        self._reload_requested.set()

    def get(self) -> Any:
        """The current bundle, loading it (or a changed/requested new one) first.

        Raises
        ------
        models.bundle.BundleError
            The first load failed (missing, tampered or incompatible bundle). A failing *re*load keeps
            the previous bundle and raises nothing.
        """
        with self._lock:
            if self._bundle is None:
                self._reload_requested.clear()
                return self._load()
            stale = self._reload_requested.is_set() or bundle_fingerprint(self.path) != self._fingerprint
            if stale:
                self._reload_requested.clear()
                old = self._bundle
                try:
                    new = self._load()
                except DataError as exc:
                    log.error("new bundle at %s rejected, keeping %s: %s", self.path,
                              getattr(old, "version", "?"), exc)
                    self._fingerprint = bundle_fingerprint(self.path)  # do not retry every task
                    return old
                close = getattr(old, "close", None)
                if callable(close):  # the old bundle's frame worker processes
                    close()
                return new
            return self._bundle
