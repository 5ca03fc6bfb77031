"""DICOM SR (TID 1500) and Secondary Capture output of the worker; all codes live in ``codes``."""

from worker.sr.builder import (
    AlgorithmInfo,
    AnalysedImage,
    ReportUids,
    StudyResult,
    build_no_analysis_report,
    build_report,
    notice_texts,
    report_uids,
)
from worker.sr.secondary_capture import build_secondary_capture, render_overlay

__all__ = [
    "AlgorithmInfo",
    "AnalysedImage",
    "ReportUids",
    "StudyResult",
    "build_no_analysis_report",
    "build_report",
    "build_secondary_capture",
    "notice_texts",
    "render_overlay",
    "report_uids",
]
