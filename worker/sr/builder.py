"""Build the eusdx result as a DICOM SR: a TID 1500 Measurement Report in the source study.

Structure of the full report (Comprehensive SR, or Comprehensive 3D SR with ``sr_sop_class``)::

    CONTAINER Imaging Measurement Report (DCM 126000)
      HAS CONCEPT MOD  Language
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID/Name/Manufacturer/Model (TID 1004)
      HAS CONCEPT MOD  Procedure reported = Diagnostic ultrasonography (SCT 16310003)
      CONTAINS Image Library (every analysed source image)
      CONTAINS Imaging Measurements
        the lesion: Measurement Group (TID 1410) on the key image
          Tracking Identifier "lesion 1" / Tracking UID, Finding = Lesion (SCT), Finding Site = Stomach (SCT)
          Algorithm Name / Version / Parameters (TID 4019)
          Image Region = SCOORD POLYLINE, the lesion outline on the key image (frame)
          NUM "Lesion: GIST, probability of GIST" (99EUSDX) = P(GIST) in %   <- the label viewers show
          NUM "Image: GIST, probability of GIST" = the key image's own P(GIST) in %
          NUM Probability (DCM 122157) = P(GIST) in %, method 99EUSDX P(GIST)...
          NUM ROI confidence (99EUSDX) in %
          CODE Finding (DCM 121071) = GIST (99EUSDX) | Leiomyoma (SCT 1162890002)   <- for machines
          CODE Analysis result level = Lesion-level result, CODE ROI source
        per other analysed image: Measurement Group (TID 1410), the same items at image level
      CONTAINS Qualitative Evaluations (UMLS C0034375)
        CODE Analysis status = All algorithms succeeded; with findings (DCM 111242)
        TEXT Decision support notice(s), frames skipped and why

Every measurement group carries its SCOORD: OHIF 3.x reads the first spatial coordinate of each group under
Imaging Measurements without checking that it exists, so a group without one blanks the whole viewport.
The key image is the analysed frame whose own probability is closest to the lesion's (``key_image_index``),
the same frame the Secondary Capture burns in.

Source header values reach the SR only through ``worker.sr.header.normalise_header``. The report is written
UNVERIFIED and PRELIMINARY (``is_verified=False``, ``is_final=False``). UIDs come from ``worker.sr.uids``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code

from eusdx.failures import ModelError
from worker.sr import codes
from worker.sr.air import (
    MANUFACTURER,
    AlgorithmInfo,
    algorithm_identification,
    contributing_equipment_item,
    observation_context,
)
from worker.sr.header import NormalisedHeader, SourceHeaderError, normalise_header
from worker.sr.uids import UID_ROOT, ReportKind, ReportUids, SrSopClass, report_uids

__all__ = [
    "MANUFACTURER",
    "UID_ROOT",
    "AlgorithmInfo",
    "AnalysedImage",
    "ImageResultLike",
    "ReportKind",
    "ReportUids",
    "ResultError",
    "SrSopClass",
    "StudyResult",
    "build_no_analysis_report",
    "build_report",
    "header_notes",
    "key_image_index",
    "notice_texts",
    "report_uids",
]

SR_SERIES_NUMBER = 990
SC_SERIES_NUMBER = 991
SERIES_DESCRIPTION = "eusdx GIST vs leiomyoma (decision support)"
_NOTICE = "Computer decision support result, not a diagnosis; it must be interpreted by a physician."
_ENGLISH = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
_SYNTHETIC = (
    "NOT FOR CLINICAL USE: the model was trained on synthetic phantom images only; "
    "its output says nothing about real patients."
)


class ResultError(ModelError, ValueError):
    """The model's result cannot be stated in an SR (probability outside [0, 1], bad outline, unknown label).

    A ``ModelError`` (``eusdx.failures`` classes it as a model failure) and a ``ValueError``.
    """


class ImageResultLike(Protocol):
    """What the builder reads from ``models.bundle.ImageResult``."""

    key: str
    probability: float
    label: str
    roi_polygon: list[tuple[float, float]]
    roi_source: str
    roi_confidence: float


@dataclass(frozen=True)
class AnalysedImage:
    """One analysed frame: the source instance's header, the frame number and the model's result.

    ``frame_number`` is 1-based and given only for multi-frame sources.
    """

    source: Dataset
    result: ImageResultLike
    frame_number: int | None = None


@dataclass(frozen=True)
class StudyResult:
    """Everything the SR says about one study."""

    study_uid: str
    images: Sequence[AnalysedImage]
    probability: float
    label: str
    algorithm: AlgorithmInfo
    notes: Sequence[str] = field(default_factory=tuple)
    extra_evidence: Sequence[Dataset] = field(default_factory=tuple)  # e.g. the SEG that gave the ROI


def notice_texts(synthetic: bool) -> list[str]:
    """The decision-support notice (and the not-for-clinical-use line for synthetic bundles)."""
    return [_NOTICE, _SYNTHETIC] if synthetic else [_NOTICE]


def key_image_index(result: StudyResult) -> int:
    """0-based index of the key image: the analysed frame whose probability is closest to the lesion's."""
    if not result.images:
        raise ValueError("no analysed images")
    return min(range(len(result.images)),
               key=lambda i: abs(float(result.images[i].result.probability) - float(result.probability)))


def header_notes(sources: Sequence[Dataset]) -> list[str]:
    """Every change the header normalisation makes to the given sources, once each (for the audit)."""
    seen: dict[str, None] = {}
    for ds in sources:
        try:
            header = normalise_header(ds)
        except SourceHeaderError as exc:
            seen.setdefault(str(exc), None)
            continue
        for change in header.changes:
            seen.setdefault(change.as_text(), None)
    return list(seen)


def _check_sources(study_uid: str, sources: Sequence[Dataset]) -> None:
    if not sources:
        raise ValueError("no source images: an SR needs evidence from the study")
    for ds in sources:
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not ds.get(keyword):
                raise SourceHeaderError(f"a source image has no {keyword}, so the SR cannot reference it")
        if ds.StudyInstanceUID != study_uid:
            raise ValueError(
                f"source image {ds.SOPInstanceUID} belongs to study {ds.StudyInstanceUID}, "
                f"not {study_uid}"
            )


def _closed_polygon(points: Sequence[tuple[float, float]], ds: Dataset, key: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
        raise ResultError(f"ROI polygon of {key!r} needs at least 3 (column, row) points")
    if not np.isfinite(arr).all():
        raise ResultError(f"ROI polygon of {key!r} has non-finite coordinates")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if arr[:, 0].min() < 0 or arr[:, 1].min() < 0 or arr[:, 0].max() > cols or arr[:, 1].max() > rows:
        raise ResultError(f"ROI polygon of {key!r} lies outside the {cols}x{rows} image")
    if not np.array_equal(arr[0], arr[-1]):
        arr = np.vstack([arr, arr[:1]])  # a POLYLINE region is closed by repeating the first point
    return arr.astype(np.float32)


def _check_probability(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0 or value != value:
        raise ResultError(f"{what} must lie in [0, 1], got {value}")
    return value


def _label(label: str) -> Code:
    try:
        return codes.label_code(label)
    except ValueError as exc:
        raise ResultError(str(exc)) from None


def _label_text(label: str) -> str:
    _label(label)
    return label


def _percent(name: Code, value: float, method: Code | None = None) -> hd.sr.Measurement:
    # The group already names the algorithm (TID 4019); repeating it per NUM only bloats the tree.
    return hd.sr.Measurement(name=name, value=round(100.0 * value, 4), unit=codes.PERCENT, method=method)


def _roi_source_code(source: str) -> Code:
    normalized = source.strip().upper()
    if normalized == "SEG":
        return codes.ROI_FROM_SEG
    if normalized == "AUTOMATIC":
        return codes.ROI_AUTOMATIC
    raise ResultError(f'roi_source {source!r} is neither "SEG" nor "automatic"')


def _region(image: AnalysedImage, header: NormalisedHeader, key: str) -> hd.sr.ImageRegion:
    polygon = _closed_polygon(image.result.roi_polygon, header.dataset, key)
    multiframe = "NumberOfFrames" in image.source
    if multiframe and image.frame_number is None:
        raise ValueError(f"image {key!r} is multi-frame: frame_number is required")
    frames = None
    if image.frame_number is not None:
        declared = header.number_of_frames
        if declared is None or not 1 <= image.frame_number <= declared:
            raise SourceHeaderError(
                f"the multi-frame image {header.dataset.SOPInstanceUID} declares "
                f"{'no valid number of frames' if declared is None else f'{declared} frames'}, so its analysed "
                f"frame {image.frame_number} cannot be referenced in the report"
            )
        frames = [image.frame_number]
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polygon,
        source_image=hd.sr.SourceImageForRegion.from_source_image(header.dataset, frames),
        pixel_origin_interpretation=hd.sr.PixelOriginInterpretationValues.FRAME if multiframe else None,
    )


def _group(
    *, lesion: bool, tracking: hd.sr.TrackingIdentifier, image: AnalysedImage, header: NormalisedHeader,
    probability: float, label: str, roi_sources: set[str], algorithm: AlgorithmInfo,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    result = image.result
    confidence = _check_probability(result.roi_confidence, f"ROI confidence of {result.key!r}")
    # The first NUM is what viewers show first: level, class and P(GIST). The lesion group sits on the key
    # image, which therefore gets no group of its own (two identical outlines would stack their labels):
    # the key image's own result is the lesion group's second NUM.
    measurements = [_percent(codes.result_concept(label, lesion=lesion), probability)]
    if lesion:
        own = _check_probability(result.probability, f"probability of image {result.key!r}")
        measurements.append(_percent(codes.result_concept(_label_text(result.label), lesion=False), own))
    measurements += [_percent(codes.PROBABILITY, probability, codes.PROBABILITY_METHOD),
                     _percent(codes.ROI_CONFIDENCE, confidence)]
    evaluations = [
        hd.sr.QualitativeEvaluation(name=codes.FINDING, value=_label(label)),
        hd.sr.QualitativeEvaluation(name=codes.RESULT_LEVEL,
                                    value=codes.LESION_LEVEL if lesion else codes.IMAGE_LEVEL),
    ]
    if len(roi_sources) == 1:
        evaluations.append(hd.sr.QualitativeEvaluation(name=codes.ROI_SOURCE,
                                                       value=_roi_source_code(next(iter(roi_sources)))))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=_region(image, header, result.key),
        finding_type=codes.LESION,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.STOMACH)],
        algorithm_id=algorithm_identification(algorithm),
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _qualitative_container(status: Code, texts: Sequence[str]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    items: list[Dataset] = [
        hd.sr.CodeContentItem(
            name=codes.ANALYSIS_STATUS, value=status, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
    ]
    for text in texts:
        items.append(
            hd.sr.TextContentItem(
                name=codes.NOTICE, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        )
    container.ContentSequence = DicomSequence(items)
    return container


_SR_CLASSES: dict[SrSopClass, type[hd.sr.ComprehensiveSR] | type[hd.sr.Comprehensive3DSR]] = {
    SrSopClass.COMPREHENSIVE: hd.sr.ComprehensiveSR, SrSopClass.COMPREHENSIVE_3D: hd.sr.Comprehensive3DSR}


def _requests(headers: dict[str, NormalisedHeader]) -> list[Dataset] | None:
    """The Referenced Request Sequence of the SR: the sources' requests, each once (None: no request known)."""
    seen: dict[tuple[str, ...], Dataset] = {}
    for header in headers.values():
        for item in header.requests:
            key = tuple(str(item.get(k) or "") for k in (
                "AccessionNumber", "PlacerOrderNumberImagingServiceRequest",
                "FillerOrderNumberImagingServiceRequest", "RequestedProcedureID"))
            seen.setdefault(key, item)
    return list(seen.values()) or None


def _document(
    content: Dataset, evidence: list[Dataset], uids: ReportUids, algorithm: AlgorithmInfo,
    requests: list[Dataset] | None = None,
) -> hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR:
    sr = _SR_CLASSES[uids.sop_class](
        evidence=evidence,
        content=content,
        requested_procedures=requests,
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_sop,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.CodingSchemeIdentificationSequence = [codes.private_scheme_item(), codes.ihe_scheme_item()]
    # highdicom types the sequence as its ContributingEquipment, which takes CID 7005 purposes only;
    # AIR's item is a plain Dataset built by hand (worker/sr/air.py), which pydicom stores as well
    sr.ContributingEquipmentSequence.append(contributing_equipment_item(algorithm))  # type: ignore[arg-type]
    sr.SeriesDescription = SERIES_DESCRIPTION
    return sr


def _headers(study_uid: str, sources: Sequence[Dataset]) -> dict[str, NormalisedHeader]:
    _check_sources(study_uid, sources)
    out: dict[str, NormalisedHeader] = {}
    for ds in sources:
        if ds.SOPInstanceUID not in out:
            out[ds.SOPInstanceUID] = normalise_header(ds)
    return out


def _evidence(study_uid: str, headers: dict[str, NormalisedHeader], extra: Sequence[Dataset]) -> list[Dataset]:
    evidence = [h.dataset for h in headers.values()]
    for ds in extra:
        if ds.SOPInstanceUID in headers:
            continue
        _check_sources(study_uid, [ds])
        ref = Dataset()  # only its UIDs: patient and study attributes come from the first image
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ref, keyword, ds.get(keyword))
        evidence.append(ref)
    return evidence


def build_report(
    result: StudyResult, *, sop_class: SrSopClass | str = SrSopClass.COMPREHENSIVE, revision: str = ""
) -> hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR:
    """Build the TID 1500 SR for an analysed study.

    Parameters
    ----------
    result
        The study's analysed images (with their source headers), the lesion-level probability and label,
        the bundle identification and free-text notes (e.g. frames skipped).
    sop_class
        Comprehensive SR or Comprehensive 3D SR (``Settings.sr_sop_class``).
    revision
        The study revision answered (enters the UIDs).

    Returns
    -------
    highdicom.sr.ComprehensiveSR | highdicom.sr.Comprehensive3DSR
        In the source study, a new series; UIDs from ``report_uids(study, version, "result", sop_class,
        revision)``.

    Raises
    ------
    ResultError
        A probability outside [0, 1], an unknown label or ROI source, or an ROI polygon with fewer than 3
        points or outside the image (a model failure).
    SourceHeaderError
        A source image cannot be referenced (no UIDs, no Rows/Columns, a frame its header does not
        declare): an input failure.
    ValueError
        No images, or images from another study.
    TypeError
        ``result`` is not a ``StudyResult``.
    """
    if not isinstance(result, StudyResult):
        raise TypeError('argument "result" must have type StudyResult')
    if not result.images:
        raise ValueError("no analysed images: use build_no_analysis_report")
    _label(result.label)
    probability = _check_probability(result.probability, "lesion probability")
    headers = _headers(result.study_uid, [image.source for image in result.images])
    uids = report_uids(result.study_uid, result.algorithm.version, ReportKind.RESULT, sop_class, revision,
                       result.algorithm.uid_root)
    roi_sources = {image.result.roi_source.strip().upper() for image in result.images}
    key = result.images[key_image_index(result)]
    groups = [_group(
        lesion=True, image=key, header=headers[key.source.SOPInstanceUID], probability=probability,
        label=result.label, roi_sources=roi_sources, algorithm=result.algorithm,
        tracking=hd.sr.TrackingIdentifier(uid=uids.tracking("lesion-1"), identifier="lesion 1"),
    )]
    for index, image in enumerate(result.images, start=1):
        if image is key:
            continue
        groups.append(_group(
            lesion=False, image=image, header=headers[image.source.SOPInstanceUID],
            probability=_check_probability(image.result.probability, f"probability of image {image.result.key!r}"),
            label=image.result.label, roi_sources={image.result.roi_source.strip().upper()},
            algorithm=result.algorithm,
            tracking=hd.sr.TrackingIdentifier(uid=uids.tracking(f"lesion-1/image-{index}"),
                                              identifier=f"lesion 1, image {index}"),
        ))
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(result.algorithm),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=groups,
        title=codes.REPORT_TITLE,
        referenced_images=[h.dataset for h in headers.values()],
    )
    texts = notice_texts(result.algorithm.synthetic) + [str(n) for n in result.notes]
    report[0].ContentSequence.append(_qualitative_container(codes.ALL_SUCCEEDED_WITH_FINDINGS, texts))
    return _document(report[0], _evidence(result.study_uid, headers, result.extra_evidence), uids,
                     result.algorithm, _requests(headers))


def build_no_analysis_report(
    study_uid: str,
    sources: Sequence[Dataset],
    algorithm: AlgorithmInfo,
    reason: str,
    *,
    kind: ReportKind | str = ReportKind.NO_SECTOR,
    sop_class: SrSopClass | str = SrSopClass.COMPREHENSIVE,
    revision: str = "",
) -> hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR:
    """Build the short SR that says no analysis was possible (``Settings.sr_on_no_analysis``).

    The TID 1500 root holds only the qualitative evaluations (analysis status "No algorithms succeeded;
    without findings", the reason and the decision-support notice); viewers show it as a document with no
    measurements.

    Parameters
    ----------
    study_uid
        The study the SR belongs to.
    sources
        The study's instances (headers suffice): the evidence.
    algorithm
        The bundle that tried.
    reason
        Why nothing was analysed, a plain sentence.
    kind
        Which "nothing analysable" outcome (undecodable, no sector, no lesion): each has its own UIDs.
    sop_class, revision
        As for :func:`build_report`.

    Returns
    -------
    highdicom.sr.ComprehensiveSR | highdicom.sr.Comprehensive3DSR

    Raises
    ------
    ValueError
        No sources, sources from another study, an empty reason, or ``kind`` "result".
    SourceHeaderError
        No source can be referenced.
    """
    if not reason.strip():
        raise ValueError('argument "reason" must not be empty')
    if ReportKind(kind) is ReportKind.RESULT:
        raise ValueError('argument "kind" must be a no-analysis kind, not "result"')
    headers = _headers(study_uid, sources)
    uids = report_uids(study_uid, algorithm.version, kind, sop_class, revision, algorithm.uid_root)
    # highdicom's MeasurementReport insists on Imaging Measurements, but TID 1500 requires that container
    # only when no Qualitative Evaluations container is present, so the root is assembled here.
    root = hd.sr.ContainerContentItem(name=codes.REPORT_TITLE, template_id="1500")
    content: list[Dataset] = []
    content.extend(hd.sr.LanguageOfContentItemAndDescendants(language=_ENGLISH))
    content.extend(observation_context(algorithm))
    content.append(
        hd.sr.CodeContentItem(
            name=codes.PROCEDURE_REPORTED_NAME,
            value=codes.PROCEDURE_REPORTED,
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
        )
    )
    texts = [f"No analysis was possible: {reason.strip()}"] + notice_texts(algorithm.synthetic)
    content.append(_qualitative_container(codes.NONE_SUCCEEDED, texts))
    root.ContentSequence = DicomSequence(content)
    return _document(root, [h.dataset for h in headers.values()], uids, algorithm, _requests(headers))
