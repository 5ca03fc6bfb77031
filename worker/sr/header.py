"""Normalise the source header values an SR copies, so that no header quirk ever costs a finished analysis.

An SR inherits the patient and study attributes of the images it reports on (PS3.3 C.7.1.1, C.7.2.1) and
references the images by UID. Archives and modalities send values that pydicom reads but highdicom,
pydicom's writer or a validator refuse: legacy ACR-NEMA dates and times (``2023.01.18``, ``16:03:46``),
person names with too many components or over-long groups, identifiers over the VR's length, control
characters, several values where one is allowed, and character sets that are misspelt or list code
extensions with an empty first value. ``normalise_header`` builds a fresh, pixel-free header that holds
only what the SR needs, each value made conformant to its VR (PS3.5 section 6.2) or left out (Type 2
attributes stay present, empty), and lists every change as a :class:`HeaderChange` for the audit log.
Text is decoded with the source's character set and the SR is written in UTF-8 (``ISO_IR 192``) when any
copied text is not ASCII, so the source's SpecificCharacterSet is never copied.

Identifiers (PatientID, AccessionNumber, StudyID, IssuerOfPatientID) are never shortened: a cut identifier
could name another patient's record, so an unusable identifier is left out instead. Descriptive text
(names, StudyDescription) is cut to the VR's length.

Notes name the attribute and what was done, never the value (no patient data in the audit's notes).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from eusdx.errors import DataError
from eusdx.uids import is_valid_uid

__all__ = [
    "HeaderChange",
    "NormalisedHeader",
    "SourceHeaderError",
    "normalise_da",
    "normalise_dt",
    "normalise_header",
    "normalise_pn",
    "normalise_tm",
    "referenced_requests",
]


class SourceHeaderError(DataError):
    """A source image's header cannot be referenced at all (bad UID, no frames): an input failure."""


@dataclass(frozen=True)
class HeaderChange:
    """One change made to a copied header value; ``note`` is a plain sentence without the value."""

    keyword: str
    action: str  # "normalised" | "left out" | "cut" | "replaced"
    note: str

    def as_text(self) -> str:
        """``"<keyword> <action>: <note>"``."""
        return f"{self.keyword} {self.action}: {self.note}"


@dataclass(frozen=True)
class NormalisedHeader:
    """A clean header (``dataset``), the number of frames it declares (``None``: single-frame), the changes
    and the Referenced Request Sequence items built from the instance's request attributes (``requests``)."""

    dataset: Dataset
    number_of_frames: int | None
    changes: tuple[HeaderChange, ...]
    requests: tuple[Dataset, ...] = ()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DA = re.compile(r"^(\d{4})[.\-/]?(\d{2})[.\-/]?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT = re.compile(
    r"^(\d{4})(?:[.\-/]?(\d{2})(?:[.\-/]?(\d{2})"
    r"(?:[T ]?(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"(?:([+\-])(\d{2}):?(\d{2}))?$"
)
_KNOWN_CHARSETS = frozenset(
    ["ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127",
     "ISO_IR 126", "ISO_IR 138", "ISO_IR 148", "ISO_IR 203", "ISO_IR 13", "ISO_IR 166", "ISO_IR 192",
     "GB18030", "GBK", "ISO 2022 IR 6", "ISO 2022 IR 100", "ISO 2022 IR 101", "ISO 2022 IR 109",
     "ISO 2022 IR 110", "ISO 2022 IR 144", "ISO 2022 IR 127", "ISO 2022 IR 126", "ISO 2022 IR 138",
     "ISO 2022 IR 148", "ISO 2022 IR 203", "ISO 2022 IR 13", "ISO 2022 IR 166", "ISO 2022 IR 87",
     "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58"]
)
_MAX_LEN = {"LO": 64, "SH": 16, "CS": 16}


def normalise_da(text: str) -> str | None:
    """``YYYYMMDD`` for a DA value in the standard or a legacy form (``YYYY.MM.DD``, ``YYYY-MM-DD``).

    Returns ``None`` when the text is not a real calendar date in one of those forms (PS3.5 6.2 DA).
    """
    match = _DA.match(text.strip())
    if not match:
        return None
    year, month, day = (int(g) for g in match.groups())
    try:
        dt.date(year, month, day)
    except ValueError:
        return None
    return f"{year:04d}{month:02d}{day:02d}"


def _valid_clock(hour: str | None, minute: str | None, second: str | None) -> bool:
    return (hour is None or int(hour) < 24) and (minute is None or int(minute) < 60) and (
        second is None or int(second) <= 60)  # 60: leap second, allowed by PS3.5 TM


def normalise_tm(text: str) -> str | None:
    """``HH[MM[SS[.F{1,6}]]]`` for a TM value in the standard or the legacy ``HH:MM:SS`` form, else ``None``."""
    match = _TM.match(text.strip())
    if not match:
        return None
    hour, minute, second, fraction = match.groups()
    if not _valid_clock(hour, minute, second):
        return None
    out = hour + (minute or "") + (second or "")
    return out + f".{fraction}" if fraction else out


def normalise_dt(text: str) -> str | None:
    """``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]`` for a DT value in the standard, ISO 8601 or dotted form."""
    match = _DT.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    if not _valid_clock(hour, minute, second):
        return None
    if sign and (int(off_h) > 14 or int(off_m) >= 60):
        return None
    out = year + (month or "") + (day or "") + (hour or "") + (minute or "") + (second or "")
    if fraction:
        out += f".{fraction}"
    if sign:
        out += f"{sign}{off_h}{off_m}"
    return out


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, never splitting a character.

    PS3.5 counts the VR limits in characters, but validators (dciodvfy) and many archives count bytes; a
    value within the byte limit is valid for both.
    """
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def _fits(text: str, limit: int) -> bool:
    return len(text.encode("utf-8")) <= limit


def _clean_text(text: str) -> str:
    return _CONTROL.sub(" ", text).replace("\\", " ").strip()


def normalise_pn(text: str) -> tuple[str, bool]:
    """A PN value with at most 5 components per group, 3 groups, 64 characters per group (PS3.5 6.2 PN).

    Returns ``(value, changed)``; surplus components are joined into the last one (nothing of the name
    is dropped but what exceeds the length limit).
    """
    cleaned = _clean_text(text)
    groups = cleaned.split("=")[:3]
    out = []
    for group in groups:
        parts = group.split("^")
        if len(parts) > 5:
            parts = parts[:4] + [" ".join(parts[4:])]
        joined = "^".join(p.strip() for p in parts).rstrip("^")
        out.append(_cut(joined, 64).rstrip("^"))
    # Validators (dciodvfy) hold the whole value to 64 bytes: drop the ideographic and phonetic groups
    # before the alphabetic one is ever cut.
    while len(out) > 1 and not _fits("=".join(out), 64):
        out.pop()
    value = "=".join(out).rstrip("=")
    return value, value != text


def _first_value(value: object) -> tuple[object, bool]:
    if isinstance(value, (MultiValue, list, tuple)):
        return (value[0] if len(value) else ""), len(value) > 1
    return value, False


#: keyword -> (VR, is identifier, Type 2 in the SR)
_COPIED: dict[str, tuple[str, bool, bool]] = {
    "PatientName": ("PN", False, True),
    "PatientID": ("LO", True, True),
    "IssuerOfPatientID": ("LO", True, False),
    "PatientBirthDate": ("DA", False, True),
    "PatientSex": ("CS", False, True),
    "StudyDate": ("DA", False, True),
    "StudyTime": ("TM", False, True),
    "ReferringPhysicianName": ("PN", False, True),
    "StudyID": ("SH", True, True),
    "AccessionNumber": ("SH", True, True),
    "StudyDescription": ("LO", False, False),
}
_TEMPORAL: dict[str, tuple[Callable[[str], str | None], str]] = {
    "DA": (normalise_da, "YYYYMMDD"),
    "TM": (normalise_tm, "HHMMSS"),
    "DT": (normalise_dt, "YYYYMMDDHHMMSS"),
}


class _Collector:
    def __init__(self) -> None:
        self.changes: list[HeaderChange] = []

    def add(self, keyword: str, action: str, note: str) -> None:
        self.changes.append(HeaderChange(keyword, action, note))


def _read(ds: Dataset, keyword: str, notes: _Collector) -> object | None:
    """The element's value, or None when absent/empty/undecodable (noted)."""
    try:
        if keyword not in ds:
            return None
        value: object = ds[keyword].value
    except Exception as exc:  # pydicom converts lazily: a hostile value raises on first access
        notes.add(keyword, "left out", f"the value could not be read ({type(exc).__name__})")
        return None
    if value is None or value == "":
        return None
    return value


def _normalise_one(keyword: str, vr: str, identifier: bool, raw: object, notes: _Collector) -> str | None:
    value, several = _first_value(raw)
    if several:
        notes.add(keyword, "normalised", "several values where one is allowed; the first one is kept")
    if isinstance(value, PersonName):
        text = str(value)
    elif isinstance(value, bytes):
        text = value.decode("ascii", errors="replace")
    else:
        text = str(value)
    if vr in _TEMPORAL:
        convert, form = _TEMPORAL[vr]
        out = convert(text)
        if out is None:
            notes.add(keyword, "left out", f"not a valid {vr} value in the {form} form or a legacy form")
        elif out != text:
            notes.add(keyword, "normalised", f"rewritten in the {form} form of PS3.5 (legacy or padded form)")
        return out
    if vr == "PN":
        out, changed = normalise_pn(text)
        if changed:
            notes.add(keyword, "normalised", "control characters, surplus components or over-long groups removed")
        return out or None
    cleaned = _clean_text(text)
    if vr == "CS":
        upper = cleaned.upper()
        if keyword == "PatientSex" and upper not in ("M", "F", "O"):
            notes.add(keyword, "left out", "not one of the defined terms M, F, O")
            return None
        cleaned = upper
    limit = _MAX_LEN[vr]
    if not _fits(cleaned, limit):
        if identifier:
            notes.add(keyword, "left out", f"longer than the {limit} bytes of {vr}; an identifier is never cut")
            return None
        notes.add(keyword, "cut", f"longer than the {limit} bytes of {vr}")
        cleaned = _cut(cleaned, limit).rstrip()
    elif cleaned != text and cleaned != text.strip():
        notes.add(keyword, "normalised", "control characters or value separators replaced by spaces")
    return cleaned or None


def _uid(ds: Dataset, keyword: str, notes: _Collector, *, required: bool) -> str | None:
    value = _read(ds, keyword, notes)
    text = str(value).strip().rstrip("\x00") if value is not None else ""
    if is_valid_uid(text, strict=True):
        return text
    if required:
        raise SourceHeaderError(f"a source image has no valid {keyword}, so the SR cannot reference it")
    if value is not None:
        notes.add(keyword, "left out", "not a valid UID")
    return None


def _positive_int(ds: Dataset, keyword: str, notes: _Collector) -> int | None:
    value = _read(ds, keyword, notes)
    if value is None:
        return None
    try:
        number = int(str(_first_value(value)[0]).strip())
    except ValueError:
        number = 0
    return number if number >= 1 else None


def _charset(ds: Dataset, texts: list[str], notes: _Collector) -> str | None:
    try:
        source = ds.get("SpecificCharacterSet")
    except Exception:  # noqa: BLE001 - an unreadable charset element is a quirk like any other
        source = "<unreadable>"
    values = [str(v).strip() for v in source] if isinstance(source, (MultiValue, list)) else (
        [str(source).strip()] if source else [])
    wanted = None if all(t.isascii() for t in texts) else "ISO_IR 192"
    unknown = [v for v in values if v and v not in _KNOWN_CHARSETS]
    if unknown:
        notes.add("SpecificCharacterSet", "replaced",
                  f"defined terms not recognised ({', '.join(repr(v[:20]) for v in unknown)}); "
                  f"copied text written as {'UTF-8 (ISO_IR 192)' if wanted else 'ASCII'}")
    elif len(values) > 1 and wanted is not None:
        notes.add("SpecificCharacterSet", "replaced",
                  "code extensions (ISO 2022) are not copied; the text is written as UTF-8 (ISO_IR 192)")
    return wanted


def normalise_header(ds: Dataset) -> NormalisedHeader:
    """Build the header an SR may copy from one source instance.

    Parameters
    ----------
    ds
        The source instance (pixel data is ignored), as read by pydicom from the spool.

    Returns
    -------
    NormalisedHeader
        SOP/series/study UIDs, Rows/Columns, NumberOfFrames (multi-frame instances), FrameOfReferenceUID,
        the patient and study attributes of ``_COPIED`` (Type 2 ones always present), SpecificCharacterSet
        ``ISO_IR 192`` only when a copied text is not ASCII; and every change made.

    Raises
    ------
    SourceHeaderError
        SOPClassUID, SOPInstanceUID, SeriesInstanceUID or StudyInstanceUID is missing or not a UID, or
        Rows/Columns is missing: the instance cannot be referenced.
    """
    notes = _Collector()
    head = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        setattr(head, keyword, _uid(ds, keyword, notes, required=True))
    frame_of_reference = _uid(ds, "FrameOfReferenceUID", notes, required=False)
    if frame_of_reference:
        head.FrameOfReferenceUID = frame_of_reference
    head.Modality = _modality(ds, str(head.SOPClassUID), notes)
    for keyword in ("Rows", "Columns"):
        number = _positive_int(ds, keyword, notes)
        if number is None:
            raise SourceHeaderError(f"source image {head.SOPInstanceUID} has no valid {keyword}")
        setattr(head, keyword, number)
    frames: int | None = None
    if _present(ds, "NumberOfFrames"):
        frames = _positive_int(ds, "NumberOfFrames", notes)
        if frames is None:
            notes.add("NumberOfFrames", "left out", "not a positive number of frames")
        else:
            head.NumberOfFrames = frames
    texts: list[str] = []
    for keyword, (vr, identifier, type2) in _COPIED.items():
        raw = _read(ds, keyword, notes)
        value = _normalise_one(keyword, vr, identifier, raw, notes) if raw is not None else None
        if value is not None:
            setattr(head, keyword, value)
            texts.append(value)
        elif type2:
            setattr(head, keyword, None)
    charset = _charset(ds, texts, notes)
    if charset:
        head.SpecificCharacterSet = charset
    requests = referenced_requests(ds, str(head.StudyInstanceUID), notes)
    return NormalisedHeader(head, frames, tuple(notes.changes), requests)


#: Referenced Request Sequence (0040,A370) attributes taken from a source's request attributes, keyword ->
#: (VR, is identifier); all are Type 2 in the item (PS3.3 Table C.17-2, SR Document General Module)
_REQUEST_COPIED: dict[str, tuple[str, bool]] = {
    "AccessionNumber": ("SH", True),
    "PlacerOrderNumberImagingServiceRequest": ("LO", True),
    "FillerOrderNumberImagingServiceRequest": ("LO", True),
    "RequestedProcedureID": ("SH", True),
    "RequestedProcedureDescription": ("LO", False),
}
#: attributes that may sit at the top level of an image when no Request Attributes Sequence is sent
_REQUEST_TOP_LEVEL = ("AccessionNumber", "PlacerOrderNumberImagingServiceRequest",
                      "FillerOrderNumberImagingServiceRequest")


def referenced_requests(ds: Dataset, study_uid: str, notes: _Collector | None = None) -> tuple[Dataset, ...]:
    """The Referenced Request Sequence items an SR answering ``ds`` carries (PS3.3 C.17.2, Table C.17-2).

    One item per Request Attributes Sequence (0040,0275) item of the source (PS3.3 Table 10-9), or one item
    from the top-level Placer/Filler Order Numbers (0040,2016)/(0040,2017) when the source has no such
    sequence; none when the source carries neither (an SR not made in response to a known request).
    Identifiers that do not fit their VR or are not ASCII are left out (Type 2: present, empty), never cut;
    the order numbers reach the RIS in HL7 ORC-2/ORC-3 (dicom_node.channels.sr_result).
    """
    notes = notes if notes is not None else _Collector()
    try:
        sources = list(ds.get("RequestAttributesSequence") or [])
    except Exception as exc:  # noqa: BLE001 - a hostile sequence is a quirk like any other
        notes.add("RequestAttributesSequence", "left out", f"the sequence could not be read ({type(exc).__name__})")
        sources = []
    if not sources and any(_present(ds, k) for k in _REQUEST_TOP_LEVEL[1:]):
        sources = [Dataset()]
    items = []
    for source in sources:
        item = Dataset()
        item.StudyInstanceUID = study_uid
        item.ReferencedStudySequence = []
        for keyword, (vr, identifier) in _REQUEST_COPIED.items():
            raw = _read(source, keyword, notes)
            if raw is None and keyword in _REQUEST_TOP_LEVEL:
                raw = _read(ds, keyword, notes)
            value = _normalise_one(keyword, vr, identifier, raw, notes) if raw is not None else None
            if value is not None and not value.isascii():
                notes.add(keyword, "left out", "request attributes are copied only in ASCII")
                value = None
            setattr(item, keyword, value)
        item.RequestedProcedureCodeSequence = _request_codes(source, notes)
        items.append(item)
    return tuple(items)


def _request_codes(source: Dataset, notes: _Collector) -> list[Dataset]:
    """The source's Requested Procedure Code Sequence items that are complete, ASCII and within VR limits."""
    out = []
    for code in source.get("RequestedProcedureCodeSequence") or []:
        values = [_clean_text(str(_first_value(code.get(k, "") or "")[0]))
                  for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")]
        if all(values) and all(v.isascii() for v in values) and _fits(values[0], 16) and _fits(values[1], 16):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator = values[0], values[1]
            item.CodeMeaning = _cut(values[2], 64).rstrip()
            out.append(item)
        else:
            notes.add("RequestedProcedureCodeSequence", "left out",
                      "an item without value, scheme and meaning in ASCII within the VR lengths")
    return out


_CS = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_MODALITY_OF_CLASS = {"1.2.840.10008.5.1.4.1.1.77.1.1": "ES", "1.2.840.10008.5.1.4.1.1.7": "OT",
                      "1.2.840.10008.5.1.4.1.1.7.4": "OT"}


def _modality(ds: Dataset, sop_class: str, notes: _Collector) -> str:
    value = _read(ds, "Modality", notes)
    text = str(_first_value(value)[0]).strip().upper() if value is not None else ""
    if _CS.match(text):
        return text
    fallback = _MODALITY_OF_CLASS.get(sop_class, "US")
    notes.add("Modality", "replaced", f"missing or not a CS value; {fallback} taken from the SOP class")
    return fallback


def _present(ds: Dataset, keyword: str) -> bool:
    try:
        return keyword in ds
    except Exception:  # noqa: BLE001
        return False
