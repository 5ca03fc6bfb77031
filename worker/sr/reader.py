"""Read the answer back out of an eusdx SR: what a PACS-side consumer (the demo, a test, a QA script) sees.

Walks the content tree instead of trusting our own builder objects, so it reads what is in the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from worker.sr import codes

__all__ = ["ReportSummary", "summarize_report"]


@dataclass(frozen=True)
class ReportSummary:
    """The lesion-level answer of one SR."""

    study_uid: str
    sop_uid: str
    label: str | None  # "GIST" | "leiomyoma" | None when no analysis was possible
    probability: float | None
    image_probabilities: tuple[float, ...]
    algorithm_version: str | None
    notices: tuple[str, ...]


def _same(item: Dataset, code: Code) -> bool:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return False
    c = seq[0]
    return bool(c.CodeValue == code.value and c.CodingSchemeDesignator == code.scheme_designator)


def _walk(items: Iterable[Dataset] | None) -> Iterator[Dataset]:
    for item in items or []:
        yield item
        yield from _walk(item.get("ContentSequence"))


def _coded_value(item: Dataset) -> tuple[str, str] | None:
    seq = item.get("ConceptCodeSequence")
    if not seq:
        return None
    return str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator)


def _label_of(code: tuple[str, str] | None) -> str | None:
    if code == (codes.GIST.value, codes.GIST.scheme_designator):
        return "GIST"
    if code == (codes.LEIOMYOMA.value, codes.LEIOMYOMA.scheme_designator):
        return "leiomyoma"
    return None


def _fraction(measured: Dataset) -> float:
    """A probability as a fraction: UCUM "%" (current SRs) or "1" (SRs written before 2026-12)."""
    value = float(measured.NumericValue)
    unit = measured.MeasurementUnitsCodeSequence[0].CodeValue
    return value / 100.0 if unit == codes.PERCENT.value else value


def _group_summary(group: Dataset) -> tuple[str | None, float | None, str | None]:
    level = label = prob = None
    for item in group.get("ContentSequence", []):
        if item.ValueType == "CODE" and _same(item, codes.RESULT_LEVEL):
            level = _coded_value(item)
        elif item.ValueType == "CODE" and _same(item, codes.FINDING):
            label = _label_of(_coded_value(item))
        elif item.ValueType == "NUM" and _same(item, codes.PROBABILITY):
            prob = _fraction(item.MeasuredValueSequence[0])
    level_name = None
    if level == (codes.LESION_LEVEL.value, codes.LESION_LEVEL.scheme_designator):
        level_name = "lesion"
    elif level == (codes.IMAGE_LEVEL.value, codes.IMAGE_LEVEL.scheme_designator):
        level_name = "image"
    return level_name, prob, label


def summarize_report(ds: Dataset) -> ReportSummary:
    """Return the lesion-level label and probability (and the image-level probabilities) of an SR."""
    label: str | None = None
    probability: float | None = None
    images: list[float] = []
    version: str | None = None
    notices: list[str] = []
    image_concepts = {(c.value, c.scheme_designator) for c in (codes.IMAGE_GIST, codes.IMAGE_LEIOMYOMA)}
    legacy_images: list[float] = []  # SRs written before 2026-12 have no image result concepts
    for item in _walk(ds.get("ContentSequence")):
        if item.ValueType == "CONTAINER" and "ContentSequence" in item:
            level, prob, found = _group_summary(item)
            if level == "lesion":
                label, probability = found, prob
            elif level == "image" and prob is not None:
                legacy_images.append(prob)
        elif item.ValueType == "NUM" and "MeasuredValueSequence" in item and (
                str(item.ConceptNameCodeSequence[0].CodeValue),
                str(item.ConceptNameCodeSequence[0].CodingSchemeDesignator)) in image_concepts:
            images.append(_fraction(item.MeasuredValueSequence[0]))
        elif item.ValueType == "TEXT" and _same(item, codes.NOTICE):
            notices.append(str(item.TextValue))
        elif item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "111003":
            version = str(item.TextValue)  # TID 4019 "Algorithm Version"
    return ReportSummary(
        study_uid=str(ds.StudyInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        label=label,
        probability=probability,
        image_probabilities=tuple(images or legacy_images),
        algorithm_version=version,
        notices=tuple(notices),
    )
