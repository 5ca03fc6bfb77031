"""Load one study from the spool and choose the frames worth analysing.

The spool holds ``<spool>/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (DESIGN.md). Image instances are
decoded to uint8 gray or RGB as stored (palette colour expanded, YBR converted by pydicom); a cine loop
contributes at most ``cine_max_frames`` evenly spaced frames; frames without a B-mode sector (Doppler,
report screenshots) are skipped and listed with the reason; a DICOM SEG in the study supplies the
lesion mask for the frames it references.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from dicom_node.sop_classes import SEGMENTATION, is_analysed
from eusdx.errors import DataError
from eusdx.uids import check_uid
from models.calibration import Calibration, CalibrationError, frame_calibration
from models.pixels import decode_frames, frame_count

__all__ = [
    "LoadedStudy",
    "SkippedFrame",
    "StudyFrame",
    "decode_frames",
    "load_study",
    "sample_indices",
    "study_dir",
]

log = logging.getLogger(__name__)

#: Values larger than this stay in the file when a header is read (pixel data; LUTs are smaller).
_DEFER = 256 * 1024


@dataclass(frozen=True)
class StudyFrame:
    """One frame chosen for analysis."""

    path: Path
    source: Dataset  # header of the instance, without pixel data
    frame_number: int | None  # 1-based, only for multi-frame instances
    pixels: np.ndarray
    seg_mask: np.ndarray | None = None
    seg: Dataset | None = None  # header of the SEG that gave the mask
    calibration: Calibration | None = None  # pixel size from the region holding the sector

    @property
    def key(self) -> str:
        """``<SOPInstanceUID>#<frame>`` (frame 1 for single-frame instances)."""
        return f"{self.source.SOPInstanceUID}#{self.frame_number or 1}"


@dataclass(frozen=True)
class SkippedFrame:
    """A frame or instance left out, and why (goes into the audit details and the SR notes)."""

    key: str
    reason: str


@dataclass
class LoadedStudy:
    """The analysable frames of one study, what was skipped, and every instance header (evidence)."""

    study_uid: str
    frames: list[StudyFrame] = field(default_factory=list)
    skipped: list[SkippedFrame] = field(default_factory=list)
    instances: list[Dataset] = field(default_factory=list)
    segs: list[Dataset] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # fallbacks the SR must state (calibration)

    def skipped_summary(self) -> list[str]:
        """Human-readable counts of skipped frames by reason, e.g. ``"3 frames skipped: no B-mode sector"``."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return [
            f"{n} frame{'s' if n != 1 else ''} skipped: {reason}" for reason, n in sorted(counts.items())
        ]


def study_dir(spool_dir: Path, study_uid: str) -> Path:
    """Spool folder of a study; the UID is validated before it becomes part of a path.

    Raises
    ------
    DataError
        The UID is not digits and dots (at most 64 characters).
    """
    return Path(spool_dir) / check_uid(study_uid, "StudyInstanceUID")


def sample_indices(n_frames: int, max_frames: int) -> list[int]:
    """Evenly spaced 0-based frame indices, first and last included, at most ``max_frames`` of them.

    Raises
    ------
    ValueError
        ``max_frames`` < 1 or ``n_frames`` < 0.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if n_frames <= max_frames:
        return list(range(n_frames))
    if max_frames == 1:
        return [n_frames // 2]
    picks = np.linspace(0, n_frames - 1, max_frames)
    return sorted({int(round(float(x))) for x in picks})


def _header(ds: Dataset) -> Dataset:
    head = Dataset()
    for tag in ds.keys():  # not ``for elem in ds``: that would read deferred pixel data in
        if tag.group != 0x7FE0:
            head.add(ds[tag])
    meta = getattr(ds, "file_meta", None)
    head.file_meta = meta if meta is not None else FileMetaDataset()
    return head


def _seg_masks(
    seg_paths: list[tuple[Path, Dataset]], frame: StudyFrame, shape: tuple[int, int]
) -> tuple[np.ndarray | None, Dataset | None]:
    from models.dicom_io import read_seg_mask

    uid = frame.source.SOPInstanceUID
    for path, seg in seg_paths:
        referenced = {
            str(inst.ReferencedSOPInstanceUID)
            for series in seg.get("ReferencedSeriesSequence", [])
            for inst in series.get("ReferencedInstanceSequence", [])
        }
        if uid not in referenced:
            continue
        try:
            mask = read_seg_mask(
                path,
                shape,
                source_sop_uid=uid,
                frame=(frame.frame_number or 1) - 1,
                multi_frame_source=frame.frame_number is not None,
            )
        except DataError as exc:
            log.info("SEG %s gives no mask for %s: %s", seg.SOPInstanceUID, frame.key, exc)
            continue
        if mask.any():
            return mask, seg
    return None, None


#: What reading a malformed file can raise in pydicom (at dcmread or at the first access of a
#: lazily converted element): truncation, bad lengths, unknown VRs, sequence bombs, missing UIDs.
UNREADABLE_DICOM: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    ValueError,
    EOFError,
    struct.error,
    RecursionError,
    NotImplementedError,
    AttributeError,
    KeyError,
    TypeError,
)


def _is_decode_error(exc: BaseException) -> bool:
    """True when ``exc`` is a parse error of the file's data set: one of ``UNREADABLE_DICOM`` raised
    inside pydicom, and not an operating-system error (those carry an errno: a storage failure is
    transient I/O, retried by the failure policy, never "no analysable frame"). The same types raised
    by our own code are bugs and propagate (a programming error, not a skipped frame)."""
    if not isinstance(exc, UNREADABLE_DICOM):
        return False
    if isinstance(exc, OSError) and exc.errno is not None:
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and f"{os.sep}pydicom{os.sep}" in last.tb_frame.f_code.co_filename


def load_study(
    spool_dir: Path,
    study_uid: str,
    *,
    cine_max_frames: int,
    has_sector: Callable[[np.ndarray], bool],
) -> LoadedStudy:
    """Read a study from the spool and choose its analysable frames.

    Parameters
    ----------
    spool_dir
        ``Settings.spool_dir``.
    study_uid
        The study to load.
    cine_max_frames
        Frames sampled evenly from each multi-frame instance.
    has_sector
        ``Bundle.has_sector``: frames for which it is false are skipped ("no B-mode sector").

    Returns
    -------
    LoadedStudy
        Frames in (series number, instance number, SOP UID) order; skipped frames with reasons.

    Raises
    ------
    DataError
        The UID is invalid or the study has no folder in the spool.
    """
    folder = study_dir(spool_dir, study_uid)
    if not folder.is_dir():
        raise DataError(f"study {study_uid} is not in the spool ({folder})")
    study = LoadedStudy(study_uid=study_uid)
    images: list[tuple[tuple[int, int, str], Path, Dataset, Dataset, int, bool]] = []
    seg_paths: list[tuple[Path, Dataset]] = []
    for path in sorted(folder.glob("*.dcm")):
        # pydicom converts elements lazily, so every attribute read of a hostile file can raise:
        # all of them happen here, and such a file is skipped with its reason, never a crash.
        try:
            # Large values (pixel data) stay in the file: frames are decoded one by one from it.
            ds: Dataset = pydicom.dcmread(path, defer_size=_DEFER)
            if ds.get("StudyInstanceUID") != study_uid:
                study.skipped.append(SkippedFrame(path.stem, "instance of another study"))
                continue
            sop_class = str(ds.get("SOPClassUID", ""))
            if sop_class == SEGMENTATION:
                header = _header(ds)
                seg_paths.append((path, header))
                study.segs.append(header)
            elif is_analysed(sop_class) and "PixelData" in ds:  # dicom_node.sop_classes.ANALYSED
                if not ds.get("SOPInstanceUID"):
                    study.skipped.append(SkippedFrame(path.stem, "instance without SOP Instance UID"))
                    continue
                key = (int(ds.get("SeriesNumber") or 0), int(ds.get("InstanceNumber") or 0),
                       str(ds.SOPInstanceUID))
                n = frame_count(ds)
                images.append((key, path, ds, _header(ds), n, "NumberOfFrames" in ds))
            # SR, KOS, presentation states, PDFs, video, private objects: stored, never analysed
        except UNREADABLE_DICOM as exc:
            if not _is_decode_error(exc):
                raise
            study.skipped.append(SkippedFrame(path.stem, f"unreadable DICOM ({type(exc).__name__})"))

    for _key, path, ds, header, n, multi in sorted(images, key=lambda item: item[0]):
        study.instances.append(header)
        indices = sample_indices(n, cine_max_frames) if multi else [0]
        try:
            # only the sampled frames are read and decoded, never the whole cine
            pixels = decode_frames(path, indices, header=ds)
        except DataError as exc:
            study.skipped.append(SkippedFrame(f"{ds.SOPInstanceUID}#*", "pixel data cannot be decoded"))
            log.info("study %s: %s", study_uid, exc)
            continue
        for index, frame_pixels in zip(indices, pixels):
            frame = StudyFrame(path, header, index + 1 if multi else None, frame_pixels)
            if not has_sector(frame_pixels):
                study.skipped.append(SkippedFrame(frame.key, "no B-mode sector (Doppler or screenshot)"))
                continue
            mask, seg = _seg_masks(seg_paths, frame, frame_pixels.shape[:2])
            try:
                cal = frame_calibration(header, frame_pixels, mask)
            except CalibrationError as exc:
                study.skipped.append(SkippedFrame(frame.key, f"calibration: {exc}"))
                continue
            if cal.note and cal.note not in study.notes:
                study.notes.append(cal.note)
            study.frames.append(StudyFrame(path, header, frame.frame_number, frame_pixels, mask, seg, cal))
        if multi and n > len(indices):
            log.info("study %s: cine %s sampled %d of %d frames", study_uid, ds.SOPInstanceUID, len(indices), n)
    return study
