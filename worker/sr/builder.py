"""Build the eusdx result as a DICOM SR: a TID 1500 Measurement Report in the source study.

Structure of the full report (Comprehensive SR; it carries SCOORD image regions, which OHIF and most
PACS viewers render from Comprehensive SR TID 1500 documents)::

    CONTAINER Imaging Measurement Report (DCM 126000)
      HAS CONCEPT MOD  Language
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID/Name/Manufacturer/Model
      HAS CONCEPT MOD  Procedure reported = Diagnostic ultrasonography (SCT 16310003)
      CONTAINS Image Library (every analysed source image)
      CONTAINS Imaging Measurements
        per analysed image: Measurement Group (TID 1410)
          Tracking Identifier / Tracking UID, Finding = Lesion (SCT), Finding Site = Stomach (SCT)
          Algorithm Name / Version / Parameters (sha256=..., threshold=...)
          Image Region = SCOORD POLYLINE (closed ROI polygon) -> SELECTED FROM the source image (frame)
          NUM Probability (DCM 122157) = P(GIST), unit "1", method 99EUSDX P(GIST)...
          NUM ROI confidence (99EUSDX)
          CODE Finding (DCM 121071) = GIST (99EUSDX) | Leiomyoma (SCT 1162890002)
          CODE ROI source (99EUSDX) = from DICOM SEG (99EUSDX) | Automated (SCT 8359006)
          CODE Analysis result level = Image-level result
        one lesion-level Measurement Group (TID 1501): aggregate probability and finding,
          Analysis result level = Lesion-level result, source images listed
      CONTAINS Qualitative Evaluations (UMLS C0034375)
        CODE Analysis status = All algorithms succeeded; with findings (DCM 111242)
        TEXT Decision support notice: "decision support, not a diagnosis" (+ "not for clinical use"
             for a bundle trained on synthetic data), frames skipped and why

The report is written UNVERIFIED and PARTIAL-final (``is_verified=False``, ``is_final=False``): it is a
second opinion for a physician, never a signed result. UIDs are deterministic in (study, bundle version)
so a redelivered study yields the same SR, which the export outbox deduplicates.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from worker.sr import codes

__all__ = [
    "AlgorithmInfo",
    "AnalysedImage",
    "ImageResultLike",
    "ReportUids",
    "StudyResult",
    "build_no_analysis_report",
    "build_report",
    "notice_texts",
    "report_uids",
]

_SR = TypeVar("_SR", bound=Dataset)

#: Root for the UIDs we mint. pydicom's root is registered for exactly this use (derived UIDs of
#: software without its own root); replace it here if the site has an organisation root.
UID_ROOT = PYDICOM_ROOT_UID
MANUFACTURER = "eusdx"
SR_SERIES_NUMBER = 990
SC_SERIES_NUMBER = 991
SERIES_DESCRIPTION = "eusdx GIST vs leiomyoma (decision support)"
_NOTICE = "Computer decision support result, not a diagnosis; it must be interpreted by a physician."
_ENGLISH = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
_SYNTHETIC = (
    "NOT FOR CLINICAL USE: the model was trained on synthetic phantom images only; "
    "its output says nothing about real patients."
)


class ImageResultLike(Protocol):
    """What the builder reads from ``models.bundle.ImageResult``."""

    key: str
    probability: float
    label: str
    roi_polygon: list[tuple[float, float]]
    roi_source: str
    roi_confidence: float


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identification of the model bundle that produced a result."""

    name: str
    version: str
    sha256: str
    synthetic: bool
    threshold: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError('argument "name" must not be empty')
        if not self.version:
            raise ValueError('argument "version" must not be empty')
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256.lower()):
            raise ValueError(f'argument "sha256" is not a SHA-256 hex digest: {self.sha256!r}')
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f'argument "threshold" must lie in [0, 1], got {self.threshold}')

    @classmethod
    def from_bundle(cls, bundle: object) -> AlgorithmInfo:
        """Read name, version, SHA-256, synthetic flag and threshold from a ``models.bundle.Bundle``."""
        return cls(
            name=str(getattr(bundle, "model_name")),
            version=str(getattr(bundle, "version")),
            sha256=str(getattr(bundle, "sha256")),
            synthetic=bool(getattr(bundle, "synthetic")),
            threshold=float(getattr(bundle, "threshold")),
        )


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


@dataclass(frozen=True)
class ReportUids:
    """Deterministic UIDs of everything one (study, bundle version) produces."""

    sr_series: str
    sr_sop: str
    sc_series: str
    study_uid: str
    bundle_version: str

    def tracking(self, what: str) -> str:
        """Tracking UID of one measurement group (``lesion-1``, ``lesion-1/image-3``)."""
        return _uid(self.study_uid, self.bundle_version, f"track/{what}")

    def sc_sop(self, index: int) -> str:
        """SOP Instance UID of the ``index``-th Secondary Capture."""
        return _uid(self.study_uid, self.bundle_version, f"sc/{index}")

    def device(self) -> str:
        """Device Observer UID: stable for one bundle version."""
        return generate_uid(UID_ROOT, entropy_srcs=[f"eusdx-device|{self.bundle_version}"])


def _uid(study_uid: str, bundle_version: str, what: str) -> str:
    # The "|" separators matter: pydicom joins entropy sources without one.
    return generate_uid(UID_ROOT, entropy_srcs=[f"{study_uid}|{bundle_version}|{what}"])


def report_uids(study_uid: str, bundle_version: str) -> ReportUids:
    """UIDs of the SR (and SC) for one study analysed by one bundle version.

    The SR SOP Instance UID is ``generate_uid(UID_ROOT, [f"{study_uid}|{bundle_version}|sr"])``.
    """
    if not study_uid:
        raise ValueError('argument "study_uid" must not be empty')
    if not bundle_version:
        raise ValueError('argument "bundle_version" must not be empty')
    return ReportUids(
        sr_series=_uid(study_uid, bundle_version, "sr-series"),
        sr_sop=_uid(study_uid, bundle_version, "sr"),
        sc_series=_uid(study_uid, bundle_version, "sc-series"),
        study_uid=study_uid,
        bundle_version=bundle_version,
    )


def notice_texts(synthetic: bool) -> list[str]:
    """The decision-support notice (and the not-for-clinical-use line for synthetic bundles)."""
    return [_NOTICE, _SYNTHETIC] if synthetic else [_NOTICE]


_TYPE2_STUDY_ATTRS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _evidence_header(ds: Dataset) -> Dataset:
    """A pixel-free copy whose Type 2 patient/study attributes exist (highdicom copies them)."""
    head = Dataset()
    for elem in ds:
        if elem.tag.group == 0x7FE0:  # pixel data: evidence needs only the header
            continue
        head.add(copy.deepcopy(elem))
    for keyword in _TYPE2_STUDY_ATTRS:
        if keyword not in head:
            setattr(head, keyword, None)
    return head


def _check_sources(study_uid: str, sources: Sequence[Dataset]) -> None:
    if not sources:
        raise ValueError("no source images: an SR needs evidence from the study")
    for ds in sources:
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not ds.get(keyword):
                raise ValueError(f"source image lacks {keyword}")
        if ds.StudyInstanceUID != study_uid:
            raise ValueError(
                f"source image {ds.SOPInstanceUID} belongs to study {ds.StudyInstanceUID}, "
                f"not {study_uid}"
            )


def _closed_polygon(points: Sequence[tuple[float, float]], ds: Dataset, key: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
        raise ValueError(f"ROI polygon of {key!r} needs at least 3 (column, row) points")
    if not np.isfinite(arr).all():
        raise ValueError(f"ROI polygon of {key!r} has non-finite coordinates")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows and cols and (
        arr[:, 0].min() < 0 or arr[:, 1].min() < 0 or arr[:, 0].max() > cols or arr[:, 1].max() > rows
    ):
        raise ValueError(f"ROI polygon of {key!r} lies outside the {cols}x{rows} image")
    if not np.array_equal(arr[0], arr[-1]):
        arr = np.vstack([arr, arr[:1]])  # a POLYLINE region is closed by repeating the first point
    return arr.astype(np.float32)


def _check_probability(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0 or value != value:
        raise ValueError(f"{what} must lie in [0, 1], got {value}")
    return value


def _algorithm_id(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name[:64],
        version=algorithm.version[:64],
        parameters=[f"sha256={algorithm.sha256}", f"threshold={algorithm.threshold:.6g}"],
        manufacturer=MANUFACTURER,
    )


def _observation_context(uids: ReportUids, algorithm: AlgorithmInfo) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uids.device(),
        name="eusdx",
        manufacturer_name=MANUFACTURER,
        model_name=algorithm.name[:64],
        serial_number=algorithm.version[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept.from_code(codes.DEVICE),
            observer_identifying_attributes=device,
        )
    )


def _probability(value: float) -> hd.sr.Measurement:
    # The group already names the algorithm (TID 4019); repeating it per NUM only bloats the tree.
    return hd.sr.Measurement(
        name=codes.PROBABILITY,
        value=round(value, 6),
        unit=codes.NO_UNITS,
        method=codes.PROBABILITY_METHOD,
    )


def _roi_source_code(source: str) -> Code:
    normalized = source.strip().upper()
    if normalized == "SEG":
        return codes.ROI_FROM_SEG
    if normalized == "AUTOMATIC":
        return codes.ROI_AUTOMATIC
    raise ValueError(f'roi_source {source!r} is neither "SEG" nor "automatic"')


def _image_group(
    index: int, image: AnalysedImage, uids: ReportUids, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    result = image.result
    probability = _check_probability(result.probability, f"probability of image {result.key!r}")
    polygon = _closed_polygon(result.roi_polygon, image.source, result.key)
    multiframe = "NumberOfFrames" in image.source
    if multiframe and image.frame_number is None:
        raise ValueError(f"image {result.key!r} is multi-frame: frame_number is required")
    frames = [image.frame_number] if image.frame_number is not None else None
    source_image = hd.sr.SourceImageForRegion.from_source_image(image.source, frames)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polygon,
        source_image=source_image,
        pixel_origin_interpretation=(
            hd.sr.PixelOriginInterpretationValues.FRAME if multiframe else None
        ),
    )
    confidence = _check_probability(result.roi_confidence, f"ROI confidence of {result.key!r}")
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(f"lesion-1/image-{index}"), identifier=f"lesion 1, image {index}"
        ),
        referenced_region=region,
        finding_type=codes.LESION,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.STOMACH)],
        algorithm_id=algorithm_id,
        measurements=[
            _probability(probability),
            hd.sr.Measurement(name=codes.ROI_CONFIDENCE, value=round(confidence, 6), unit=codes.NO_UNITS),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=codes.FINDING, value=codes.label_code(result.label)),
            hd.sr.QualitativeEvaluation(name=codes.ROI_SOURCE, value=_roi_source_code(result.roi_source)),
            hd.sr.QualitativeEvaluation(name=codes.RESULT_LEVEL, value=codes.IMAGE_LEVEL),
        ],
    )


def _lesion_group(
    result: StudyResult, uids: ReportUids, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    probability = _check_probability(result.probability, "lesion probability")
    seen: set[str] = set()
    sources = []
    for image in result.images:
        if image.source.SOPInstanceUID in seen:
            continue
        seen.add(image.source.SOPInstanceUID)
        sources.append(hd.sr.SourceImageForMeasurementGroup.from_source_image(image.source))
    roi_sources = {image.result.roi_source.strip().upper() for image in result.images}
    evaluations = [
        hd.sr.QualitativeEvaluation(name=codes.FINDING, value=codes.label_code(result.label)),
        hd.sr.QualitativeEvaluation(name=codes.RESULT_LEVEL, value=codes.LESION_LEVEL),
    ]
    if len(roi_sources) == 1:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=codes.ROI_SOURCE, value=_roi_source_code(result.images[0].result.roi_source)
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uids.tracking("lesion-1"), identifier="lesion 1"),
        finding_type=codes.LESION,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.STOMACH)],
        algorithm_id=algorithm_id,
        measurements=[_probability(probability)],
        qualitative_evaluations=evaluations,
        source_images=sources,
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


def _finish(sr: _SR) -> _SR:
    sr.CodingSchemeIdentificationSequence = [codes.private_scheme_item()]
    sr.SeriesDescription = SERIES_DESCRIPTION
    return sr


def build_report(result: StudyResult) -> hd.sr.ComprehensiveSR:
    """Build the TID 1500 Comprehensive SR for an analysed study.

    Parameters
    ----------
    result
        The study's analysed images (with their source headers), the lesion-level probability and label,
        the bundle identification and free-text notes (e.g. frames skipped).

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        In the source study, a new series; deterministic UIDs from ``report_uids``.

    Raises
    ------
    ValueError
        No images, images from another study, a probability outside [0, 1], an unknown label or ROI
        source, or an ROI polygon with fewer than 3 points or outside the image.
    TypeError
        ``result`` is not a ``StudyResult``.
    """
    if not isinstance(result, StudyResult):
        raise TypeError('argument "result" must have type StudyResult')
    if not result.images:
        raise ValueError("no analysed images: use build_no_analysis_report")
    codes.label_code(result.label)
    sources = [image.source for image in result.images]
    _check_sources(result.study_uid, sources)
    uids = report_uids(result.study_uid, result.algorithm.version)
    algorithm_id = _algorithm_id(result.algorithm)
    groups: list[object] = [
        _image_group(i, image, uids, algorithm_id) for i, image in enumerate(result.images, start=1)
    ]
    groups.append(_lesion_group(result, uids, algorithm_id))

    unique_sources: dict[str, Dataset] = {}
    for ds in sources:
        unique_sources.setdefault(ds.SOPInstanceUID, _evidence_header(ds))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(uids, result.algorithm),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=groups,  # type: ignore[arg-type]
        title=codes.REPORT_TITLE,
        referenced_images=list(unique_sources.values()),
    )
    texts = notice_texts(result.algorithm.synthetic) + [str(n) for n in result.notes]
    report[0].ContentSequence.append(_qualitative_container(codes.ALL_SUCCEEDED_WITH_FINDINGS, texts))
    evidence = list(unique_sources.values())
    for extra in result.extra_evidence:
        if extra.SOPInstanceUID not in unique_sources:
            _check_sources(result.study_uid, [extra])
            evidence.append(_evidence_header(extra))
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_sop,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    return _finish(sr)


def build_no_analysis_report(
    study_uid: str, sources: Sequence[Dataset], algorithm: AlgorithmInfo, reason: str
) -> hd.sr.EnhancedSR:
    """Build the short SR that says no analysis was possible (``Settings.sr_on_no_analysis``).

    It has no spatial coordinates, so it is an Enhanced SR; the TID 1500 root holds only the
    qualitative evaluations (analysis status "No algorithms succeeded; without findings", the reason
    and the decision-support notice).

    Parameters
    ----------
    study_uid
        The study the SR belongs to.
    sources
        The study's instances (headers suffice): the evidence.
    algorithm
        The bundle that tried.
    reason
        Why nothing was analysed, e.g. "no frame with a B-mode sector (4 frames skipped)".

    Returns
    -------
    highdicom.sr.EnhancedSR

    Raises
    ------
    ValueError
        No sources, sources from another study, or an empty reason.
    """
    if not reason.strip():
        raise ValueError('argument "reason" must not be empty')
    _check_sources(study_uid, sources)
    uids = report_uids(study_uid, algorithm.version)
    unique: dict[str, Dataset] = {}
    for ds in sources:
        unique.setdefault(ds.SOPInstanceUID, _evidence_header(ds))
    # highdicom's MeasurementReport insists on Imaging Measurements, but TID 1500 requires that container
    # only when no Qualitative Evaluations container is present, so the root is assembled here.
    root = hd.sr.ContainerContentItem(name=codes.REPORT_TITLE, template_id="1500")
    content: list[Dataset] = []
    content.extend(hd.sr.LanguageOfContentItemAndDescendants(language=_ENGLISH))
    content.extend(_observation_context(uids, algorithm))
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
    sr = hd.sr.EnhancedSR(
        evidence=list(unique.values()),
        content=root,
        series_instance_uid=uids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sr_sop,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    return _finish(sr)
