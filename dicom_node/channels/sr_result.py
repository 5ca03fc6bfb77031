"""The lesion-level result of an eusdx SR, read from the SR file itself (not from our builder's
objects), for the channels that report it in other words than DICOM (webhook JSON, HL7 v2 ORU).

Concepts are those of the eusdx SR content tree (``worker/sr/codes.py``; conformance statement,
section 4): DCM 121071 Finding, DCM 122157 Probability inside the container whose 99EUSDX
EUSDX-0007 "Analysis result level" is EUSDX-0009 "Lesion-level result", DCM 111001/111003
Algorithm Name/Version (TID 4019), 99EUSDX EUSDX-0005 notices and EUSDX-0010 analysis status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.channels.sr_class import walk_content

__all__ = ["SrResult", "read_result"]

# Concepts of the eusdx SR (worker/sr/codes.py; conformance statement, SR section).
_FINDING = ("121071", "DCM")
_PROBABILITY = ("122157", "DCM")
_LEVEL = ("EUSDX-0007", "99EUSDX")
_LESION_LEVEL = ("EUSDX-0009", "99EUSDX")
_NOTICE = ("EUSDX-0005", "99EUSDX")
_STATUS = ("EUSDX-0010", "99EUSDX")
_ALGORITHM_NAME = ("111001", "DCM")
_ALGORITHM_VERSION = ("111003", "DCM")



@dataclass(frozen=True)
class SrResult:
    """What an ORU carries, read from the SR file itself.

    ``finding`` and ``status`` are ``(value, scheme, meaning)`` exactly as coded in the SR;
    ``probability`` is the lesion-level P(GIST) in [0, 1] (``None``: no analysis possible).
    """

    study_uid: str
    sop_uid: str
    accession: str
    patient_id: str
    patient_name: str
    placer_order: str
    filler_order: str
    title: tuple[str, str, str]
    observed: str
    finding: tuple[str, str, str] | None
    probability: float | None
    status: tuple[str, str, str] | None
    algorithm_name: str
    algorithm_version: str
    notices: tuple[str, ...] = field(default_factory=tuple)


def _code(seq: Any) -> tuple[str, str, str] | None:
    if not seq:
        return None
    c = seq[0]
    return (str(c.get("CodeValue", "")), str(c.get("CodingSchemeDesignator", "")),
            str(c.get("CodeMeaning", "")))


def _name(item: Dataset) -> tuple[str, str] | None:
    code = _code(item.get("ConceptNameCodeSequence"))
    return None if code is None else code[:2]


def _order_numbers(ds: Dataset) -> tuple[str, str]:
    placer = str(ds.get("PlacerOrderNumberImagingServiceRequest", "") or "")
    filler = str(ds.get("FillerOrderNumberImagingServiceRequest", "") or "")
    for request in ds.get("ReferencedRequestSequence", []) or []:
        placer = placer or str(request.get("PlacerOrderNumberImagingServiceRequest", "") or "")
        filler = filler or str(request.get("FillerOrderNumberImagingServiceRequest", "") or "")
    return placer, filler


def read_result(ds: Dataset) -> SrResult:
    """The lesion-level result of an eusdx SR (Comprehensive, Comprehensive 3D or Enhanced).

    Order numbers come from the SR's Placer/Filler Order Number (0040,2016)/(0040,2017) or its
    Referenced Request Sequence (0040,A370) (PS3.3 C.17.2), when the study carried them.
    """
    finding = status = None
    probability = None
    name = version = ""
    notices: list[str] = []
    for item in walk_content(ds.get("ContentSequence")):
        concept = _name(item)
        vtype = item.get("ValueType")
        if concept == _ALGORITHM_NAME and vtype == "TEXT":
            name = name or str(item.TextValue)
        elif concept == _ALGORITHM_VERSION and vtype == "TEXT":
            version = version or str(item.TextValue)
        elif concept == _NOTICE and vtype == "TEXT" and str(item.TextValue) not in notices:
            notices.append(str(item.TextValue))
        elif concept == _STATUS and vtype == "CODE" and status is None:
            status = _code(item.get("ConceptCodeSequence"))
        elif vtype == "CONTAINER":
            children = list(item.get("ContentSequence", []))
            if not any(_name(c) == _LEVEL and (_code(c.get("ConceptCodeSequence")) or ("",))[:2]
                       == _LESION_LEVEL for c in children):
                continue
            for child in children:
                cname = _name(child)
                if cname == _PROBABILITY and child.get("MeasuredValueSequence"):
                    measured = child.MeasuredValueSequence[0]
                    probability = float(measured.NumericValue)
                    unit = _code(measured.get("MeasurementUnitsCodeSequence"))
                    if unit is not None and unit[:2] == ("%", "UCUM"):
                        probability /= 100.0  # SRs since 2026-12 state P(GIST) in percent
                elif cname == _FINDING and child.get("ConceptCodeSequence"):
                    finding = _code(child.ConceptCodeSequence)
    placer, filler = _order_numbers(ds)
    title = _code(ds.get("ConceptNameCodeSequence")) or ("126000", "DCM",
                                                         "Imaging Measurement Report")
    observed = (str(ds.get("ContentDate", "") or "") + str(ds.get("ContentTime", "") or ""))
    return SrResult(
        study_uid=str(ds.get("StudyInstanceUID", "")), sop_uid=str(ds.get("SOPInstanceUID", "")),
        accession=str(ds.get("AccessionNumber", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        placer_order=placer, filler_order=filler, title=title,
        observed=re.sub(r"[^0-9.]", "", observed)[:19], finding=finding,
        probability=probability, status=status, algorithm_name=name,
        algorithm_version=version, notices=tuple(notices))
