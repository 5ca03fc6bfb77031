"""Parse just the header of a received data set: the UIDs and the routing attributes.

The receive path must never decode pixel data, so the encoded bytes are read by pydicom only up to
(not including) Pixel Data, with the encoding the presentation context agreed. Patient identifiers
read here go only to the audit store, which pseudonymises them; they are never logged.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from eusdx.errors import DataError

__all__ = ["InflateLimitExceeded", "InstanceHeader", "UnparseableDataset", "parse_header"]

_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_PREFIX = 1 << 16
# Only these elements are materialised (pydicom still walks every header, cheaply).
_WANTED: list[Any] = [
    0x00080005,  # SpecificCharacterSet (decoding of the text values below)
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x00080050,  # AccessionNumber
    0x00080060,  # Modality
    0x0008103E,  # SeriesDescription
    0x00100020,  # PatientID
    0x00180015,  # BodyPartExamined
    0x0020000D,  # StudyInstanceUID
    0x0020000E,  # SeriesInstanceUID
]


class UnparseableDataset(DataError):
    """The encoded data set cannot be read with the agreed transfer syntax."""


class InflateLimitExceeded(DataError):
    """A Deflated data set inflates beyond the configured size or ratio (a deflate bomb)."""


def _inflate(data: bytes | bytearray | memoryview, limit: tuple[int, float] | None) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set (PS3.5 A.5), never past ``limit``.

    ``limit`` is ``(max_bytes, max_ratio)``: the inflated size may exceed neither ``max_bytes`` nor
    ``max_ratio`` times the deflated size. zlib's ``max_length`` stops the inflation there, so a
    bomb costs at most the limit in memory and time.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    if limit is None:
        return inflater.decompress(data) + inflater.flush()
    cap = int(min(limit[0], limit[1] * max(len(data), 1)))
    out = inflater.decompress(data, cap + 1)
    if len(out) <= cap and not inflater.unconsumed_tail:
        out += inflater.flush()
    if len(out) > cap or inflater.unconsumed_tail:
        raise InflateLimitExceeded(
            f"deflated data set of {len(data)} bytes inflates beyond {cap} bytes "
            f"(limits: {limit[0]} bytes, ratio {limit[1]:g})")
    return out


@dataclass(frozen=True)
class InstanceHeader:
    """What the node needs from one instance; every field may be ``None`` when absent."""

    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    sop_class_uid: str | None
    modality: str | None = None
    body_part: str | None = None
    series_description: str | None = None
    accession: str | None = None
    patient_id: str | None = None


def _stop_at_pixels(tag: Any, vr: str | None, length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


_ASCII_KEYWORDS = {  # UI and CS values are plain ASCII: decode the raw bytes, skip pydicom's
    "StudyInstanceUID": 0x0020000D,  # per-value conversion and regex validation (the
    "SeriesInstanceUID": 0x0020000E,  # receive path's hottest part of header reading)
    "SOPInstanceUID": 0x00080018,
    "SOPClassUID": 0x00080016,
    "Modality": 0x00080060,
    "BodyPartExamined": 0x00180015,
}


def _text(ds: Any, keyword: str) -> str | None:
    tag = _ASCII_KEYWORDS.get(keyword)
    if tag is not None and tag in ds:
        raw = ds.get_item(tag)
        if isinstance(getattr(raw, "value", None), bytes):
            # a backslash (multi-valued) stays in: the UID check refuses it
            text = raw.value.decode("ascii", "replace")
            return text.strip().rstrip("\x00").strip() or None
    value = ds.get(keyword)
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        # a multi-valued UID/CS is malformed for our keys; keep the first value to report it
        value = next(iter(value), "")
    text = str(value).strip().rstrip("\x00").strip()
    return text or None


_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD


def _check_tail(data: bytes | bytearray | memoryview, pos: int, implicit: bool,
                little: bool) -> None:
    """Walk the elements from ``pos`` (Pixel Data onward) by their headers only, so a data set
    cut short in transit is refused without decoding a single pixel."""
    view = memoryview(data)
    end = len(view)
    order = "<" if little else ">"
    while pos < end:
        if pos + 8 > end:
            raise UnparseableDataset("data set ends inside an element header")
        group, elem = struct.unpack_from(order + "HH", view, pos)
        tag = (group << 16) | elem
        if implicit or tag >> 16 == 0xFFFE:
            (length,) = struct.unpack_from(order + "L", view, pos + 4)
            pos += 8
        else:
            vr = bytes(view[pos + 4:pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise UnparseableDataset("data set ends inside an element header")
                (length,) = struct.unpack_from(order + "L", view, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(order + "H", view, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            # encapsulated pixel data: items of defined length up to the sequence delimiter
            while True:
                if pos + 8 > end:
                    raise UnparseableDataset("encapsulated pixel data is truncated")
                g, e, item_len = struct.unpack_from("<HHL", view, pos)
                pos += 8
                if (g << 16 | e) == _SEQ_END:
                    break
                if (g << 16 | e) != _ITEM or item_len == _UNDEFINED:
                    return  # an undefined-length sequence after pixel data: leave it to readers
                pos += item_len
            continue
        pos += length
    if pos > end:
        raise UnparseableDataset(f"data set is {pos - end} bytes shorter than its elements say")


def _read_until_pixels(view: memoryview, implicit: bool, little: bool) -> tuple[Any, int]:
    """Read elements up to Pixel Data; returns the data set and the offset where it stopped.

    A header is a few KB: read a prefix first so the pixel bytes are not copied; only a header
    larger than the prefix (or a data set without pixels) makes a second, full read.
    """
    for limit in (_PREFIX, None):
        chunk = view if limit is None or len(view) <= limit else view[:limit]
        fp = BytesIO(chunk)
        try:
            ds = read_dataset(fp, is_implicit_VR=implicit, is_little_endian=little,
                              stop_when=_stop_at_pixels, defer_size=4096,
                              specific_tags=_WANTED)
        except Exception:
            if chunk is view:
                raise
            continue
        pos = fp.tell()
        at_pixels = pos + 4 <= len(chunk) and _tag_at(chunk, pos, little) in _PIXEL_TAGS
        if chunk is view or at_pixels:
            return ds, pos
    raise AssertionError("unreachable")


def _tag_at(view: memoryview, pos: int, little: bool) -> int:
    group, elem = struct.unpack_from("<HH" if little else ">HH", view, pos)
    return int((group << 16) | elem)


def parse_header(data: bytes | bytearray | memoryview, transfer_syntax: str, *,
                 inflate_limit: tuple[int, float] | None = None) -> InstanceHeader:
    """Read the header of an encoded data set (no File Meta, no pixel decoding).

    Parameters
    ----------
    data
        The data set exactly as received on the presentation context.
    transfer_syntax
        The context's transfer syntax UID.
    inflate_limit
        ``(max_bytes, max_ratio)`` for Deflated data sets (``Settings.inflate_max_bytes``,
        ``inflate_max_ratio``); ``None``: no limit.

    Returns
    -------
    InstanceHeader

    Raises
    ------
    UnparseableDataset
        The bytes are not a data set in that transfer syntax (truncated, garbage, bad deflate
        stream, undecodable element values).
    InflateLimitExceeded
        A Deflated data set inflates beyond ``inflate_limit``.
    """
    ts = UID(transfer_syntax)
    try:
        if ts.is_deflated:
            data = _inflate(data, inflate_limit)
        view = memoryview(data)
        ds, pos = _read_until_pixels(view, ts.is_implicit_VR, ts.is_little_endian)
        _check_tail(view, pos, ts.is_implicit_VR, ts.is_little_endian)
        header = InstanceHeader(
            study_uid=_text(ds, "StudyInstanceUID"),
            series_uid=_text(ds, "SeriesInstanceUID"),
            sop_uid=_text(ds, "SOPInstanceUID"),
            sop_class_uid=_text(ds, "SOPClassUID"),
            modality=_text(ds, "Modality"),
            body_part=_text(ds, "BodyPartExamined"),
            series_description=_text(ds, "SeriesDescription"),
            accession=_text(ds, "AccessionNumber"),
            patient_id=_text(ds, "PatientID"),
        )
    except (UnparseableDataset, InflateLimitExceeded):
        raise
    except Exception as exc:  # pydicom raises many types (struct.error, ValueError, EOFError, ...)
        raise UnparseableDataset(f"cannot parse data set: {type(exc).__name__}: {exc}") from exc
    return header
