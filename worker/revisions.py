"""Study revisions: which instance set an SR answers, and how an amended SR names the one it replaces.

A *revision* is the SHA-256 (first 16 hex digits) of the sorted SOP Instance UIDs of the study's
instances that the analysis reads: images and SEGs, and any file whose class cannot be read (it might
be one). SRs, key objects and presentation states do not count, so our own SR forwarded back by the
PACS never makes a new revision (and never a loop). Late images or a late SEG make a new revision, which
is analysed again; its SR gets new UIDs (``worker.sr.builder.report_uids(..., revision=)``) and lists the
SR it replaces in the Predecessor Documents Sequence (0040,A360), PS3.3 C.17.2.

The spool names every file ``<SOPInstanceUID>.dcm`` (``dicom_node.spool``), so a revision costs one
header read per file, no pixel data.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from eusdx.errors import DataError
from eusdx.failures import TransientIOError
from worker.frames import study_dir

__all__ = ["Revision", "add_predecessor", "revision_of", "study_revision"]

#: SOP classes that never change what the analysis sees (SR, key object selection, presentation states).
_NOT_ANALYSED_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.")


@dataclass(frozen=True)
class Revision:
    """One revision of a study: ``digest`` (16 hex digits) and the SOP Instance UIDs it covers."""

    digest: str
    sop_uids: tuple[str, ...]


def revision_of(sop_uids: list[str] | tuple[str, ...]) -> Revision:
    """The revision of a set of SOP Instance UIDs (order and repeats do not matter)."""
    uids = tuple(sorted(set(sop_uids)))
    return Revision(hashlib.sha256("\n".join(uids).encode("ascii")).hexdigest()[:16], uids)


def _sop_class(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TransientIOError(f"a spooled instance could not be read ({type(exc).__name__}, "
                               f"errno {exc.errno}); the analysis is retried") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID"])
        value = ds.get("SOPClassUID")
    except Exception:  # noqa: BLE001 - a parse failure of bytes in memory: the class is unknown
        return None
    return str(value) if value else None


def study_revision(spool_dir: Path, study_uid: str) -> Revision:
    """The current revision of a study in the spool.

    Raises
    ------
    DataError
        The UID is invalid or the study has no folder in the spool.
    TransientIOError
        A file could not be read (retry).
    """
    folder = study_dir(spool_dir, study_uid)
    if not folder.is_dir():
        raise DataError(f"study {study_uid} is not in the spool ({folder})")
    uids = []
    for path in sorted(folder.glob("*.dcm")):
        sop_class = _sop_class(path)
        if sop_class is not None and sop_class.startswith(_NOT_ANALYSED_PREFIXES):
            continue
        uids.append(path.stem)
    return revision_of(uids)


def add_predecessor(sr: Dataset, previous: dict[str, Any] | None) -> bool:
    """Name the SR this one replaces in its Predecessor Documents Sequence (PS3.3 C.17.2.1).

    Parameters
    ----------
    sr
        The new SR (changed in place).
    previous
        ``AuditLog.last_report`` details: ``sr_sop_uid``, ``sr_series_uid``, ``sr_sop_class``.

    Returns
    -------
    bool
        True when a predecessor was added (not for the same SOP instance, nor without the UIDs needed).
    """
    if not previous:
        return False
    sop_uid, series_uid, sop_class = (previous.get(k) for k in ("sr_sop_uid", "sr_series_uid", "sr_sop_class"))
    if not (sop_uid and series_uid and sop_class) or sop_uid == sr.SOPInstanceUID:
        return False
    ref_sop = Dataset()
    ref_sop.ReferencedSOPClassUID = sop_class
    ref_sop.ReferencedSOPInstanceUID = sop_uid
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = DicomSequence([ref_sop])
    item = Dataset()
    item.StudyInstanceUID = sr.StudyInstanceUID
    item.ReferencedSeriesSequence = DicomSequence([series])
    sr.PredecessorDocumentsSequence = DicomSequence([item])
    return True
