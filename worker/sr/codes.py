"""Every coded concept the eusdx SR and Secondary Capture use, in one place.

Standard concepts come from ``pydicom.sr.codedict`` (DICOM PS3.16: DCM, SNOMED CT as SCT, UCUM), so their
values are the ones DICOM publishes; nothing here invents an SCT value.

DICOM PS3.16 and the SNOMED CT subset in ``pydicom.sr.codedict`` have no concept for a gastrointestinal
stromal tumour (GIST), and a few report-specific concepts (ROI source, the decision-support notice) have no
standard code either. Those live in the private coding scheme ``99EUSDX`` (the ``99`` prefix is the one
PS3.3 section 8.2 reserves for private schemes). Every SR we write declares the scheme in its
CodingSchemeIdentificationSequence (``private_scheme_item``), and the conformance statement lists
the table below:

=================  ============================================================
99EUSDX value      meaning
=================  ============================================================
EUSDX-0001         Gastrointestinal stromal tumor
EUSDX-0002         P(GIST) from fused deep-feature and radiomics classifier
EUSDX-0003         ROI source
EUSDX-0004         Lesion outline from DICOM Segmentation in study
EUSDX-0005         Decision support notice
EUSDX-0006         ROI confidence
EUSDX-0007         Analysis result level
EUSDX-0008         Image-level result
EUSDX-0009         Lesion-level result (aggregate of images)
EUSDX-0010         Analysis status
EUSDX-0011         Lesion: GIST, probability of GIST
EUSDX-0012         Lesion: leiomyoma, probability of GIST
EUSDX-0013         Image: GIST, probability of GIST
EUSDX-0014         Image: leiomyoma, probability of GIST
=================  ============================================================

EUSDX-0011..0014 name a NUM whose value is P(GIST) in percent (UCUM ``%``). The concept meaning states the
class the model decided and the level (lesion = whole study, image = one frame), because viewers label a
measurement with its NUM items only ("<meaning>: <value> <unit>", OHIF 3.x) and show no CODE finding; the
CODE Finding (DCM 121071) next to it says the same for machines.

IHE AI Results (Rev. 1.1, section 6.5.3.1) names the Contributing Equipment purpose of reference of an AI
algorithm ``(Newcode1, 99IHE, "Processing Algorithm")``, a placeholder code of the IHE supplement that no
DICOM code replaces yet; it is used as published and the ``99IHE`` scheme is declared like ours.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "PRIVATE_SCHEME",
    "GIST",
    "LEIOMYOMA",
    "STOMACH",
    "LESION",
    "NEOPLASM",
    "PROBABILITY",
    "NO_UNITS",
    "FINDING",
    "REPORT_TITLE",
    "PROCEDURE_REPORTED",
    "PROCEDURE_REPORTED_NAME",
    "DEVICE",
    "QUALITATIVE_EVALUATIONS",
    "PROBABILITY_METHOD",
    "ROI_SOURCE",
    "ROI_FROM_SEG",
    "ROI_AUTOMATIC",
    "ROI_CONFIDENCE",
    "NOTICE",
    "RESULT_LEVEL",
    "IMAGE_LEVEL",
    "LESION_LEVEL",
    "ANALYSIS_STATUS",
    "ALL_SUCCEEDED_WITH_FINDINGS",
    "NONE_SUCCEEDED",
    "PERCENT",
    "LESION_GIST",
    "LESION_LEIOMYOMA",
    "IMAGE_GIST",
    "IMAGE_LEIOMYOMA",
    "RESULT_CONCEPTS",
    "PROCESSING_ALGORITHM",
    "IHE_SCHEME",
    "label_code",
    "result_concept",
    "private_scheme_item",
    "ihe_scheme_item",
]

PRIVATE_SCHEME = "99EUSDX"


def _private(value: str, meaning: str) -> Code:
    return Code(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


# --- standard concepts (values published in PS3.16 / SNOMED CT, taken from pydicom) ------------------
LEIOMYOMA: Code = codes.SCT.Leiomyoma  # 1162890002
STOMACH: Code = codes.SCT.Stomach  # 69695003
LESION: Code = codes.SCT.Lesion  # 52988006
NEOPLASM: Code = codes.SCT.Neoplasm  # 108369006
PROBABILITY: Code = codes.DCM.Probability  # 122157
NO_UNITS: Code = codes.UCUM.NoUnits  # UCUM "1"
PERCENT: Code = codes.UCUM.Percent  # UCUM "%"
FINDING: Code = codes.DCM.Finding  # 121071
REPORT_TITLE: Code = codes.DCM.ImagingMeasurementReport  # 126000, TID 1500 root
PROCEDURE_REPORTED: Code = codes.SCT.DiagnosticUltrasonography  # 16310003
PROCEDURE_REPORTED_NAME: Code = codes.DCM.ProcedureReported  # 121058, TID 1500 row 4
DEVICE: Code = codes.DCM.Device  # 121007, observer type
ROI_AUTOMATIC: Code = codes.SCT.Automated  # 8359006
# TID 1500 row "Qualitative Evaluations" container. pydicom's dictionary lacks this entry; the value is
# the one PS3.16 TID 1500 itself names: (C0034375, UMLS, "Qualitative Evaluations").
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
# Whether the algorithm produced a result, in the words of CID 6047 (CAD processing summary).
ALL_SUCCEEDED_WITH_FINDINGS: Code = codes.DCM.AllAlgorithmsSucceededWithFindings  # 111242
NONE_SUCCEEDED: Code = codes.DCM.NoAlgorithmsSucceededWithoutFindings  # 111245

# --- private concepts (no standard code exists) ------------------------------------------------------
GIST = _private("EUSDX-0001", "Gastrointestinal stromal tumor")
PROBABILITY_METHOD = _private("EUSDX-0002", "P(GIST) from fused deep-feature and radiomics classifier")
ROI_SOURCE = _private("EUSDX-0003", "ROI source")
ROI_FROM_SEG = _private("EUSDX-0004", "Lesion outline from DICOM Segmentation in study")
NOTICE = _private("EUSDX-0005", "Decision support notice")
ROI_CONFIDENCE = _private("EUSDX-0006", "ROI confidence")
RESULT_LEVEL = _private("EUSDX-0007", "Analysis result level")
ANALYSIS_STATUS = _private("EUSDX-0010", "Analysis status")
IMAGE_LEVEL = _private("EUSDX-0008", "Image-level result")
LESION_LEVEL = _private("EUSDX-0009", "Lesion-level result (aggregate of images)")
LESION_GIST = _private("EUSDX-0011", "Lesion: GIST, probability of GIST")
LESION_LEIOMYOMA = _private("EUSDX-0012", "Lesion: leiomyoma, probability of GIST")
IMAGE_GIST = _private("EUSDX-0013", "Image: GIST, probability of GIST")
IMAGE_LEIOMYOMA = _private("EUSDX-0014", "Image: leiomyoma, probability of GIST")
RESULT_CONCEPTS = (LESION_GIST, LESION_LEIOMYOMA, IMAGE_GIST, IMAGE_LEIOMYOMA)

# --- IHE AI Results (AIR) -------------------------------------------------------------------------
IHE_SCHEME = "99IHE"
PROCESSING_ALGORITHM = Code("Newcode1", IHE_SCHEME, "Processing Algorithm")

_LABELS = {"gist": GIST, "leiomyoma": LEIOMYOMA}


def label_code(label: str) -> Code:
    """Code for a classifier label.

    Parameters
    ----------
    label
        ``"GIST"`` or ``"leiomyoma"`` (case-insensitive), as ``Bundle.label_for`` returns.

    Returns
    -------
    Code
        The private GIST concept or SCT Leiomyoma.

    Raises
    ------
    ValueError
        The label is neither.
    """
    try:
        return _LABELS[label.strip().lower()]
    except KeyError:
        raise ValueError(f'label {label!r} is neither "GIST" nor "leiomyoma"') from None


def result_concept(label: str, *, lesion: bool) -> Code:
    """The readable NUM concept of a result: level (lesion or image) and decided class, value P(GIST) in %.

    Raises
    ------
    ValueError
        The label is neither "GIST" nor "leiomyoma".
    """
    gist = label_code(label) == GIST
    if lesion:
        return LESION_GIST if gist else LESION_LEIOMYOMA
    return IMAGE_GIST if gist else IMAGE_LEIOMYOMA


def ihe_scheme_item() -> Dataset:
    """One CodingSchemeIdentificationSequence item that declares IHE's ``99IHE`` scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = IHE_SCHEME
    item.CodingSchemeName = "IHE placeholder codes (IHE RAD AI Results supplement)"
    item.CodingSchemeResponsibleOrganization = "IHE International"
    return item


def private_scheme_item() -> Dataset:
    """One CodingSchemeIdentificationSequence item that declares the ``99EUSDX`` scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "eusdx private codes"
    item.CodingSchemeVersion = "1"
    item.CodingSchemeResponsibleOrganization = "eusdx project"
    return item
