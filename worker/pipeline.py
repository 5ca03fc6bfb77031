"""The per-study pipeline: spool -> frames -> bundle -> SR -> export outbox -> audit.

``analyze_study`` is a plain function of its inputs (settings, a loaded bundle, an audit log, an export
function). The Celery task and the embedded consumer both call it, so both paths run the same code.

Failures are split in two. Deterministic ones (a bad image, no lesion found, no analysable frame, an
invalid bundle result) end here as a recorded failure with a reason: the audit gets an ``analysis`` row
with ``error`` and the study state ``failed``, and the function returns normally so nothing retries.
Transient ones (disk or database I/O, export hand-off) raise ``TransientError`` (or the original
``OSError``/``AuditUnavailable``) for the caller to retry with back-off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset

from eusdx.config import Settings
from eusdx.errors import DataError, EusdxError
from eusdx.failures import FailureClass, TransientIOError, classify
from worker.frames import LoadedStudy, SkippedFrame, StudyFrame, load_study
from worker.revisions import add_predecessor, study_revision
from worker.sr.builder import (
    AlgorithmInfo,
    AnalysedImage,
    ReportKind,
    StudyResult,
    build_no_analysis_report,
    build_report,
    header_notes,
    key_image_index,
    report_uids,
)

__all__ = [
    "AuditLike",
    "BundleLike",
    "Exporter",
    "Outcome",
    "TransientError",
    "analyze_study",
    "short_reason",
]

log = logging.getLogger(__name__)


#: A failure that may pass on its own (I/O, database, export hand-off): retry with back-off. The one
#: transient type of the product (``eusdx.failures``), under the name the worker has always used.
TransientError = TransientIOError


class BundleLike(Protocol):
    """What the pipeline uses of ``models.bundle.Bundle``."""

    version: str
    sha256: str
    threshold: float
    synthetic: bool
    model_name: str

    def has_sector(self, pixels: np.ndarray) -> bool: ...
    def predict(self, frames: list[Any], device: str = "cpu") -> list[Any]: ...
    def lesion_probability(self, results: list[Any]) -> float: ...
    def label_for(self, probability: float) -> str: ...


class AuditLike(Protocol):
    """What the pipeline uses of ``audit.AuditLog``."""

    def study_state(self, *, study_uid: str, state: str, reason: str | None = None,
                    accession: str | None = None, details: dict[str, Any] | None = None) -> None: ...
    def analysis(self, *, study_uid: str, bundle_version: str, bundle_sha256: str, device: str,
                 timings: dict[str, float], lesions: list[dict[str, Any]], probability: float | None,
                 label: str | None, roi_source: str | None, error: str | None = None,
                 sr_sop_uid: str | None = None) -> None: ...
    def revision_reported(self, study_uid: str, revision: str, bundle_version: str) -> bool: ...
    def last_report(self, study_uid: str) -> dict[str, Any] | None: ...
    def last_settled(self, study_uid: str) -> tuple[str, str | None, dict[str, Any]] | None: ...


class Exporter(Protocol):
    """The worker's export hand-off: ``export(sr_dataset, study_uid) -> outbox item id``.

    Durable once it returns (``dicom_node.export.submit`` bound to the settings, see
    ``worker.runtime.default_export``). Raises ``OSError`` / ``TransientError`` when the outbox cannot take
    the SR now (retried), ``DataError`` for an SR that can never be exported.
    """

    def __call__(self, dataset: Dataset, study_uid: str, /) -> str: ...


@dataclass(frozen=True)
class Outcome:
    """What happened to one study; ``status`` is reported, duplicate, failed or no-analysis."""

    study_uid: str
    status: str
    bundle_version: str
    probability: float | None = None
    label: str | None = None
    sr_sop_uid: str | None = None
    reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    export_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (the Celery task's return value)."""
        return {
            "study_uid": self.study_uid,
            "status": self.status,
            "bundle_version": self.bundle_version,
            "probability": self.probability,
            "label": self.label,
            "sr_sop_uid": self.sr_sop_uid,
            "reason": self.reason,
            "timings": dict(self.timings),
            "export_ids": list(self.export_ids),
        }


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def _autocast(device: str) -> Iterator[None]:
    if device.startswith("cuda"):
        import torch

        with torch.autocast("cuda", dtype=torch.float16):
            yield
    else:
        yield


def _model_frames(study: LoadedStudy) -> list[Any]:
    from models.bundle import Frame

    # calibration: chosen in load_study from the ultrasound region that holds the frame's sector
    return [
        Frame(pixels=f.pixels, seg_mask=f.seg_mask, key=f.key,
              mm_per_pixel=f.calibration.mm_per_pixel if f.calibration else None)
        for f in study.frames
    ]


def short_reason(reason: str, limit: int = 250) -> str:
    """A reason that fits the audit's reason column (the full text stays in ``details``/``error``)."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _fail(
    audit: AuditLike, bundle: BundleLike, device: str, study_uid: str, reason: str,
    timings: dict[str, float], details: dict[str, Any], sr_sop_uid: str | None = None,
) -> None:
    audit.analysis(
        study_uid=study_uid, bundle_version=bundle.version, bundle_sha256=bundle.sha256, device=device,
        timings=timings, lesions=[], probability=None, label=None, roi_source=None, error=reason,
        sr_sop_uid=sr_sop_uid,
    )
    audit.study_state(study_uid=study_uid, state="failed", reason=short_reason(reason),
                      details={**details, "error": reason, "failure_class": reason.split(":", 1)[0]})


def _submit(export: Exporter, dataset: Dataset, study_uid: str) -> str:
    try:
        return export(dataset, study_uid)
    except (OSError, TransientError):
        raise
    except DataError:
        raise
    except EusdxError as exc:  # the outbox could not take it now (disk, database): try again later
        raise TransientError(f"export hand-off failed: {exc}") from exc


def analyze_study(
    study_uid: str,
    *,
    settings: Settings,
    bundle: BundleLike,
    audit: AuditLike,
    export: Exporter,
    device: str = "cpu",
    delivery: int = 1,
    secondary_capture: Callable[..., Dataset] | None = None,
) -> Outcome:
    """Analyse one study end to end and record every step.

    Parameters
    ----------
    study_uid
        StudyInstanceUID (validated before it touches a path).
    settings
        Spool folder, ``cine_max_frames``, ``sr_on_no_analysis``, ``secondary_capture``.
    bundle
        The loaded model bundle (``models.bundle.Bundle``).
    audit
        ``audit.AuditLog``.
    export
        Hands an SR/SC dataset to the export outbox; returns the outbox item id.
    device
        ``cpu`` or ``cuda`` (already resolved).
    delivery
        How many times this study's message has been delivered (recorded in the audit).
    secondary_capture
        Builder of the burned-in image; defaults to ``worker.sr.build_secondary_capture``.

    Returns
    -------
    Outcome
        ``reported``, ``duplicate`` (this bundle version already reported the study), ``failed``
        (deterministic: reason recorded) or ``no-analysis`` (no usable frame; short SR if configured).

    Raises
    ------
    TransientError, OSError, audit.AuditUnavailable
        Retry later; nothing that was recorded becomes wrong by retrying (UIDs are deterministic and
        the outbox deduplicates by SOP Instance UID).
    """
    timings: dict[str, float] = {}
    total_start = time.perf_counter()
    try:
        revision = study_revision(settings.spool_dir, study_uid)
    except DataError as exc:
        reason = classify(exc).as_text()
        _fail(audit, bundle, device, study_uid, reason, timings, {"bundle_version": bundle.version})
        return Outcome(study_uid, "failed", bundle.version, reason=reason, timings=timings)
    if audit.revision_reported(study_uid, revision.digest, bundle.version):
        return _already_answered(audit, study_uid, revision.digest, bundle.version)
    uids = report_uids(study_uid, bundle.version, ReportKind.RESULT, settings.sr_sop_class, revision.digest,
                       root=settings.uid_root)
    audit.study_state(
        study_uid=study_uid, state="analysing",
        details={"bundle_version": bundle.version, "delivery": delivery, "device": device,
                 "revision": revision.digest, "instances": len(revision.sop_uids)},
    )
    algorithm = dataclasses.replace(AlgorithmInfo.from_bundle(bundle), uid_root=settings.uid_root)
    previous = audit.last_report(study_uid)

    try:
        with _timed(timings, "load"):
            study = load_study(
                settings.spool_dir, study_uid, cine_max_frames=settings.cine_max_frames,
                has_sector=bundle.has_sector,
            )
    except DataError as exc:
        reason = classify(exc).as_text()
        _fail(audit, bundle, device, study_uid, reason, timings,
              {"bundle_version": bundle.version, "revision": revision.digest})
        return Outcome(study_uid, "failed", bundle.version, reason=reason, timings=timings)

    skipped = [{"key": s.key, "reason": s.reason} for s in study.skipped]
    details: dict[str, Any] = {
        "bundle_version": bundle.version, "frames": len(study.frames), "skipped": skipped,
        "instances": len(study.instances), "revision": revision.digest,
    }
    notes = header_notes(study.instances)
    if notes:  # what the SR will not copy as received (no values, only what was done)
        details["header_changes"] = notes
    if not study.frames:
        return _no_analysis(study, settings, bundle, audit, export, device, algorithm, timings, details,
                            _empty_kind(study), previous)

    try:
        refused: ReportKind | None = None
        with _timed(timings, "predict"), _autocast(device):
            try:
                raw = list(bundle.predict(_model_frames(study), device=device))
            except DataError as exc:  # the bundle found no sector / no lesion on any frame
                refused = _refusal_kind(exc)
                if refused is None:
                    raise
                raw = []
        # The bundle leaves out frames in which it finds no sector or no lesion; say which.
        by_key = {r.key: r for r in raw}
        analysed = [(f, by_key[f.key]) for f in study.frames if f.key in by_key]
        for f in study.frames:
            if f.key not in by_key:
                study.skipped.append(SkippedFrame(
                    f.key, "no B-mode sector found by the model" if refused is ReportKind.NO_SECTOR
                    else "no lesion found by the model"))
        details["skipped"] = [{"key": s.key, "reason": s.reason} for s in study.skipped]
        details["frames"] = len(analysed)
        if not analysed:
            return _no_analysis(study, settings, bundle, audit, export, device, algorithm, timings, details,
                                refused or ReportKind.NO_LESION, previous)
        frames = [f for f, _ in analysed]
        results = [r for _, r in analysed]
        probability = float(bundle.lesion_probability(results))
        label = str(bundle.label_for(probability))
        for stage in ("preprocess", "roi", "radiomics", "deep", "classify"):
            values = [float(r.timings.get(stage, 0.0)) for r in results if getattr(r, "timings", None)]
            if values:
                timings[f"predict.{stage}"] = sum(values)
        with _timed(timings, "sr_build"):
            images = [AnalysedImage(f.source, r, f.frame_number) for f, r in analysed]
            segs = list({f.seg.SOPInstanceUID: f.seg for f in frames if f.seg is not None}.values())
            study_result = StudyResult(
                study_uid=study_uid, images=images, probability=probability, label=label,
                algorithm=algorithm, notes=study.skipped_summary() + study.notes, extra_evidence=segs,
            )
            sr = build_report(study_result, sop_class=settings.sr_sop_class, revision=revision.digest)
            details.update(_sr_details(sr, previous))
            extra: list[Dataset] = []
            if settings.secondary_capture:
                extra.append(_secondary_capture(secondary_capture, study_result, frames, uids))
    except (DataError, ValueError) as exc:  # bad input, a result the SR cannot state: never retried
        failure = classify(exc)
        if failure.failure_class is FailureClass.PROGRAMMING:
            log.exception("study %s: the SR could not be built", study_uid)
        reason = failure.as_text()
        _fail(audit, bundle, device, study_uid, reason, timings, details)
        return Outcome(study_uid, "failed", bundle.version, reason=reason, timings=timings)

    export_ids: list[str] = []
    with _timed(timings, "export"):
        export_ids.append(_submit(export, sr, study_uid))
        for ds in extra:
            export_ids.append(_submit(export, ds, study_uid))
    timings["total"] = time.perf_counter() - total_start
    lesions = [{
        "lesion": 1, "probability": probability, "label": label,
        "threshold": float(bundle.threshold),  # the operating point the label used (audit performance)
        "images": [{"key": r.key, "probability": float(r.probability), "label": r.label,
                    "roi_source": r.roi_source, "roi_confidence": float(r.roi_confidence)}
                   for r in results],
    }]
    roi_sources = sorted({r.roi_source for r in results})
    audit.analysis(
        study_uid=study_uid, bundle_version=bundle.version, bundle_sha256=bundle.sha256, device=device,
        timings=timings, lesions=lesions, probability=probability, label=label,
        roi_source=roi_sources[0] if len(roi_sources) == 1 else "mixed", sr_sop_uid=sr.SOPInstanceUID,
    )
    audit.study_state(
        study_uid=study_uid, state="reported", reason=f"{label} p={probability:.3f}",
        details={**details, "export_ids": export_ids},
    )
    log.info("study %s reported: %s p=%.3f (%d frames, %.2fs)", study_uid, label, probability,
             len(results), timings["total"])
    return Outcome(study_uid, "reported", bundle.version, probability, label, sr.SOPInstanceUID,
                   timings=timings, export_ids=export_ids)


def _secondary_capture(
    builder: Callable[..., Dataset] | None, result: StudyResult, frames: Sequence[StudyFrame], uids: Any,
) -> Dataset:
    if builder is None:
        from worker.sr.secondary_capture import build_secondary_capture

        builder = build_secondary_capture
    best = key_image_index(result)  # the SR's key image: the same frame the lesion group outlines
    frame = frames[best]
    return builder(frame.source, frame.pixels, result.images[best].result.roi_polygon,
                   probability=result.probability, label=result.label, algorithm=result.algorithm, uids=uids)


#: Skip reasons of ``worker.frames`` that mean "the frame was decoded and had no B-mode sector".
_NO_SECTOR_PREFIX = "no B-mode sector"


def _refusal_kind(exc: BaseException) -> ReportKind | None:
    """The no-analysis kind of a model refusal (``models`` NoSectorError / NoLesionError), else None."""
    from models.preprocess import NoSectorError
    from models.roi import NoLesionError

    if isinstance(exc, NoSectorError):
        return ReportKind.NO_SECTOR
    if isinstance(exc, NoLesionError):
        return ReportKind.NO_LESION
    return None


#: ... and "the frame had a sector but no usable calibration".
_CALIBRATION_PREFIX = "calibration:"


def _empty_kind(study: LoadedStudy) -> ReportKind:
    """Why a study has no analysable frame: the furthest any frame got (decoded, sector, calibration)."""
    if any(s.reason.startswith(_CALIBRATION_PREFIX) for s in study.skipped):
        return ReportKind.NO_CALIBRATION
    if any(s.reason.startswith(_NO_SECTOR_PREFIX) for s in study.skipped):
        return ReportKind.NO_SECTOR
    return ReportKind.UNDECODABLE


_KIND_SENTENCES = {
    ReportKind.UNDECODABLE: "no image of the study could be decoded",
    ReportKind.NO_SECTOR: "no frame of the study shows a B-mode ultrasound sector",
    ReportKind.NO_CALIBRATION: "no frame of the study has a usable calibration",
    ReportKind.NO_LESION: "the model found no lesion in any analysable frame",
}


def _sr_details(sr: Dataset, previous: dict[str, Any] | None) -> dict[str, Any]:
    """What the audit keeps of an SR: its UIDs and the SR it replaces (Predecessor Documents Sequence)."""
    replaces = previous.get("sr_sop_uid") if add_predecessor(sr, previous) and previous else None
    return {"sr_sop_uid": str(sr.SOPInstanceUID), "sr_series_uid": str(sr.SeriesInstanceUID),
            "sr_sop_class": str(sr.SOPClassUID), "replaces_sr": replaces}


def _already_answered(audit: AuditLike, study_uid: str, revision: str, bundle_version: str) -> Outcome:
    """A re-queued revision that this bundle already reported: back to the state it had settled in."""
    settled = audit.last_settled(study_uid)
    state, _, details = settled if settled is not None else ("reported", None, {})
    reason = f"revision {revision} was already answered by bundle {bundle_version}; nothing new to analyse"
    log.info("study %s: %s", study_uid, reason)
    keep = {k: v for k, v in details.items() if not k.startswith("_")}
    audit.study_state(study_uid=study_uid, state=state, reason=short_reason(reason),
                      details={**keep, "revision": revision, "bundle_version": bundle_version,
                               "requeued": True})
    report = audit.last_report(study_uid) or {}
    return Outcome(study_uid, "duplicate", bundle_version, reason=reason,
                   sr_sop_uid=report.get("sr_sop_uid"))


def _no_analysis(
    study: LoadedStudy, settings: Settings, bundle: BundleLike, audit: AuditLike, export: Exporter,
    device: str, algorithm: AlgorithmInfo, timings: dict[str, float], details: dict[str, Any],
    kind: ReportKind, previous: dict[str, Any] | None = None,
) -> Outcome:
    summary = "; ".join(study.skipped_summary()) or "the study holds no image instances"
    sentence = _KIND_SENTENCES[kind] if study.instances else "the study holds no readable image instance"
    reason = f"input: {sentence} ({summary})"  # the "input" class of eusdx.failures
    details = {**details, "no_analysis_kind": kind.value}
    sr_uid: str | None = None
    export_ids: list[str] = []
    if settings.sr_on_no_analysis and study.instances:
        try:
            sr = build_no_analysis_report(study.study_uid, study.instances, algorithm,
                                          f"{sentence} ({summary})", kind=kind,
                                          sop_class=settings.sr_sop_class, revision=str(details["revision"]))
            details.update(_sr_details(sr, previous))
        except (DataError, ValueError) as exc:
            log.warning("study %s: no short SR possible: %s", study.study_uid, classify(exc).as_text())
        else:
            with _timed(timings, "export"):
                export_ids.append(_submit(export, sr, study.study_uid))
            sr_uid = sr.SOPInstanceUID
    _fail(audit, bundle, device, study.study_uid, reason, timings,
          {**details, "sr_sop_uid": sr_uid, "export_ids": export_ids}, sr_sop_uid=sr_uid)
    return Outcome(study.study_uid, "no-analysis", bundle.version, reason=reason, sr_sop_uid=sr_uid,
                   timings=timings, export_ids=export_ids)
