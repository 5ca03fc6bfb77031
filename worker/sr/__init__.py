"""DICOM SR (TID 1500) and Secondary Capture output of the worker; all codes live in ``codes``."""

from worker.sr.builder import (
    AlgorithmInfo,
    AnalysedImage,
    ReportKind,
    ReportUids,
    ResultError,
    SrSopClass,
    StudyResult,
    build_no_analysis_report,
    build_report,
    header_notes,
    key_image_index,
    notice_texts,
    report_uids,
)
from worker.sr.header import HeaderChange, SourceHeaderError, normalise_header
from worker.sr.secondary_capture import build_secondary_capture, render_overlay

__all__ = [
    "AlgorithmInfo",
    "AnalysedImage",
    "HeaderChange",
    "ReportKind",
    "ReportUids",
    "ResultError",
    "SourceHeaderError",
    "SrSopClass",
    "StudyResult",
    "build_no_analysis_report",
    "build_report",
    "build_secondary_capture",
    "header_notes",
    "key_image_index",
    "normalise_header",
    "notice_texts",
    "render_overlay",
    "report_uids",
]
