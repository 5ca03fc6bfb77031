"""Per-frame analysis (preprocess -> ROI -> radiomics) on a pool of processes, one per CPU core.

The three steps are pure numpy/scipy/SimpleITK work on one frame and do not depend on the other
frames of a study, so a study of N frames is split across ``processes`` worker processes; the
deep features run afterwards, batched, in the calling process (torch), so the two never compete
for the cores (no over-subscription: each worker process runs its libraries single-threaded).

Workers are started with the ``spawn`` method (never ``fork``: the parent holds torch's OpenMP
threads, and a forked child of a multi-threaded process can deadlock) and keep the radiomics
extractor built once, so a warm pool costs only the pickling of the frames (an RGB frame of
640x480 is 0.9 MB). ``processes=1`` (or one frame) runs the same function in the caller's process.

A daemonic process may not start children (``multiprocessing``: "daemonic processes are not
allowed to have children"); Celery's prefork pool runs every task in one, and there the queue's
own concurrency already spreads studies over the cores, so the pool analyses the frames in the
calling process instead (logged once per pool).

Sources: Python ``concurrent.futures.ProcessPoolExecutor`` and ``multiprocessing`` start methods;
threadpoolctl (limits BLAS/OpenMP pools inside a process); SimpleITK
``ProcessObject.SetGlobalDefaultNumberOfThreads``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eusdx.errors import DataError

from .preprocess import NoSectorError, PreprocessConfig, Preprocessed, mask_to_work, preprocess
from .roi import NoLesionError, Roi, RoiConfig, auto_roi, roi_from_mask

__all__ = ["FrameJob", "FrameWork", "FramePool", "FrameSkipped", "usable_cores"]

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class FrameJob:
    """One frame to analyse: ``pixels`` (H, W) or (H, W, 3) uint8, optional SEG mask (H, W) bool,
    ``mm_per_pixel`` of the original frame (None: uncalibrated)."""

    key: str
    pixels: np.ndarray
    seg_mask: np.ndarray | None
    mm_per_pixel: float | None


@dataclass(frozen=True)
class FrameWork:
    """The result for one frame: work image, ROI, radiomics features by name, seconds per step."""

    key: str
    pre: Preprocessed
    roi: Roi
    features: dict[str, float]
    timings: dict[str, float]


@dataclass(frozen=True)
class FrameSkipped:
    """A frame without a sector or a lesion: left out of the study's result, with the reason."""

    key: str
    error: DataError


class _Analyser:
    """The per-frame steps with their settings; one per process (the extractor is built once)."""

    def __init__(self, pre: PreprocessConfig, roi: RoiConfig, radiomics_settings: Path,
                 only: frozenset[str] | None = None) -> None:
        import SimpleITK as sitk

        from .radiomics_features import RadiomicsExtractor

        # pyradiomics runs dozens of tiny SimpleITK filters per ROI (crop, label statistics); on
        # images this small SimpleITK's thread pool costs more than it saves (bench/pipeline.py).
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        self.pre, self.roi = pre, roi
        self.extractor = RadiomicsExtractor(radiomics_settings, only=only)

    def __call__(self, job: FrameJob) -> FrameWork | FrameSkipped:
        t0 = time.perf_counter()
        try:
            pre = preprocess(job.pixels, self.pre, mm_per_pixel=job.mm_per_pixel)
            t1 = time.perf_counter()
            if job.seg_mask is not None:
                if job.seg_mask.shape != job.pixels.shape[:2]:
                    raise DataError(f"frame {job.key}: SEG mask shape {job.seg_mask.shape} differs "
                                    "from the frame")
                roi = roi_from_mask(mask_to_work(job.seg_mask, pre))
            else:
                roi = auto_roi(pre, self.roi)
        except (NoSectorError, NoLesionError) as exc:
            return FrameSkipped(job.key, exc)
        t2 = time.perf_counter()
        feats = self.extractor.extract(pre.image, roi.mask, spacing=pre.mm_per_pixel or 1.0)
        t3 = time.perf_counter()
        return FrameWork(job.key, pre, roi, feats,
                         {"preprocess": t1 - t0, "roi": t2 - t1, "radiomics": t3 - t2})


_WORKER: _Analyser | None = None


def _init_worker(pre: PreprocessConfig, roi: RoiConfig, radiomics_settings: Path,
                 only: frozenset[str] | None) -> None:
    global _WORKER
    # One thread per library in each worker: the pool itself is the parallelism.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _WORKER = _Analyser(pre, roi, radiomics_settings, only)


def _run_in_worker(job: FrameJob) -> FrameWork | FrameSkipped:
    assert _WORKER is not None, "frame pool worker was not initialised"
    return _WORKER(job)


def _warm_in_worker(_: int) -> int:
    # Imports pyradiomics' feature classes and SimpleITK in the worker before the first study.
    assert _WORKER is not None, "frame pool worker was not initialised"
    _WORKER.extractor._get(False)
    if _WORKER.extractor.log_sigmas:
        _WORKER.extractor._get(True)
    return os.getpid()


class FramePool:
    """Analyses the frames of a study in parallel; the pool starts on first use and stays.

    Parameters
    ----------
    pre, roi
        The bundle's preprocessing and ROI settings.
    radiomics_settings
        The bundle's pyradiomics settings file.
    processes
        Worker processes; 0 = :func:`usable_cores`; 1 = run in the calling process.
    only
        Radiomics feature names to compute (``RadiomicsExtractor(only=...)``); None = all.
    """

    def __init__(self, pre: PreprocessConfig, roi: RoiConfig, radiomics_settings: Path, *,
                 processes: int = 0, only: frozenset[str] | None = None) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, not {processes}")
        self.processes = processes or usable_cores()
        self._args = (pre, roi, Path(radiomics_settings), only)
        self._local = _Analyser(*self._args)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._daemon_logged = False

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=self._args)
            return self._executor

    def _parallel(self) -> bool:
        """True when frames go to worker processes: more than one wanted and allowed to start."""
        if self.processes <= 1:
            return False
        if multiprocessing.current_process().daemon:
            if not self._daemon_logged:
                self._daemon_logged = True
                log.info("frame pool runs in-process instead of %d processes: this process is daemonic "
                         "(a Celery prefork child)", self.processes)
            return False
        return True

    def warm(self) -> None:
        """Start every worker process and import its libraries now (not in the first study)."""
        if self._parallel():
            list(self._pool().map(_warm_in_worker, range(self.processes)))

    def analyse(self, jobs: list[FrameJob]) -> list[FrameWork | FrameSkipped]:
        """Each job's :class:`FrameWork` (or :class:`FrameSkipped`), in the order of ``jobs``.

        Raises
        ------
        DataError
            A frame's SEG mask does not fit it, or pyradiomics failed on its ROI
            (``RadiomicsError``): the first such error in frame order.
        """
        if len(jobs) <= 1 or not self._parallel():
            return [self._local(job) for job in jobs]
        try:
            futures: list[Future[FrameWork | FrameSkipped]] = [
                self._pool().submit(_run_in_worker, job) for job in jobs]
            return [f.result() for f in futures]
        except BrokenProcessPool:
            # A worker died (killed, out of memory): drop the pool so the next study starts a new
            # one, and let this study be retried by the queue.
            self.close()
            raise

    def close(self) -> None:
        """Stop the worker processes (a new pool starts on next use)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __getstate__(self) -> dict[str, Any]:  # a bundle copied into another process gets no pool
        state = dict(self.__dict__)
        state["_executor"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
