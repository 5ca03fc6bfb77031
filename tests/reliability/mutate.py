"""A seeded mutator of encoded DICOM data sets (Explicit VR Little Endian, no meta).

Each mutation returns ``(kind, data_set_bytes, transfer_syntax)``. The kinds are the bad input a
hospital network really produces plus the classic parser attacks: truncation, wrong lengths,
wrong VRs, huge declared lengths, nested sequence bombs, pixel data of the wrong size, a wrong
SOP class, missing UIDs, non-ASCII junk, UIDs shaped like paths, deflate bombs, byte flips.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from tests.dicom_node.dicomfiles import encode, us_instance

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}
_ALL_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
            b"OB", b"OD", b"OF", b"OL", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"TM",
            b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"ZZ", b"\x00\x00", b"\xff\xfe"]

KINDS = ("truncate", "length", "vr", "huge-length", "sequence-bomb", "pixel-size", "sop-class",
         "missing-uid", "junk-text", "path-uid", "deflate-bomb", "byte-flip")


@dataclass(frozen=True)
class Element:
    offset: int
    tag: tuple[int, int]
    vr: bytes
    header: int  # bytes before the value
    length: int


def elements(data: bytes) -> list[Element]:
    """Top-level elements of an Explicit VR Little Endian data set (stops where it breaks)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<L", data, pos + 8)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            header = 8
        out.append(Element(pos, (group, elem), vr, header, length))
        if length == 0xFFFFFFFF:
            break
        pos += header + length
    return out


def _find(els: list[Element], tag: tuple[int, int]) -> Element | None:
    return next((e for e in els if e.tag == tag), None)


def _element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH", *tag) + vr + b"\x00\x00" + struct.pack("<L", len(value)) + value
    return struct.pack("<HH", *tag) + vr + struct.pack("<H", len(value)) + value


def _replace_value(data: bytes, el: Element, value: bytes) -> bytes:
    return data[:el.offset] + _element(el.tag, el.vr, value) + data[el.offset + el.header + el.length:]


_ZEROS: list[bytes] = []


def _zeros_deflated() -> bytes:
    """64 MiB of zeros as a final raw-deflate block run (computed once: ~64 KiB). After a full
    flush a deflate stream may continue with blocks from a fresh compressor."""
    if not _ZEROS:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        zero = bytes(1 << 20)
        _ZEROS.append(b"".join(comp.compress(zero) for _ in range(64)) + comp.flush())
    return _ZEROS[0]


def _sequence_bomb(depth: int) -> bytes:
    # (0040,0275) Request Attribute Sequence nested ``depth`` times, undefined lengths
    item_start = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    seq_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    head = b"\x40\x00\x75\x02SQ\x00\x00\xff\xff\xff\xff"
    return (head + item_start) * depth + (item_end + seq_end) * depth


class Mutator:
    """Deterministic stream of mutated data sets for ``seed``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def base(self) -> Dataset:
        return us_instance(rows=self.rng.choice([8, 16, 32]), pixel_value=self.rng.randrange(256))

    def __iter__(self) -> Iterator[tuple[str, Dataset, bytes, str]]:
        i = 0
        while True:
            kind = KINDS[i % len(KINDS)]
            i += 1
            ds = self.base()
            data, ts = self.mutate(kind, ds, encode(ds))
            yield kind, ds, data, ts

    def mutate(self, kind: str, ds: Dataset, data: bytes) -> tuple[bytes, str]:
        rng = self.rng
        els = elements(data)
        ts = ExplicitVRLittleEndian
        if kind == "truncate":
            data = data[:rng.randrange(0, len(data))]
        elif kind == "length":
            el = rng.choice(els)
            pos = el.offset + (8 if el.header == 12 else 6)
            fmt = "<L" if el.header == 12 else "<H"
            limit = 0xFFFFFFFE if el.header == 12 else 0xFFFF
            data = data[:pos] + struct.pack(fmt, rng.randrange(0, limit)) + data[pos + struct.calcsize(fmt):]
        elif kind == "vr":
            el = rng.choice(els)
            data = data[:el.offset + 4] + rng.choice(_ALL_VRS) + data[el.offset + 6:]
        elif kind == "huge-length":
            el = _find(els, (0x7FE0, 0x0010)) or els[-1]
            data = data[:el.offset + 8] + struct.pack("<L", rng.choice(
                [0xFFFFFFF0, 0x7FFFFFFF, 0x10000000])) + data[el.offset + 12:]
        elif kind == "sequence-bomb":
            bomb = _sequence_bomb(rng.choice([64, 500, 3000]))
            data = data + bomb  # (0040,0275) sorts after (0020,..) and before (7FE0,0010)
            pixel = _find(els, (0x7FE0, 0x0010))
            if pixel is not None:
                data = data[:pixel.offset] + bomb + data[pixel.offset:len(data) - len(bomb)]
        elif kind == "pixel-size":
            el = _find(els, (0x7FE0, 0x0010))
            assert el is not None
            size = rng.choice([0, 2, el.length // 2, el.length * 3 + 2])
            data = _replace_value(data, el, bytes(size))
        elif kind == "sop-class":
            el = _find(els, (0x0008, 0x0016))
            assert el is not None
            data = _replace_value(data, el, rng.choice(
                [b"1.2.840.10008.5.1.4.1.1.2", b"1.2.840.10008.5.1.4.1.1.88.33", b"1.2.3"]))
        elif kind == "missing-uid":
            el = _find(els, rng.choice([(0x0008, 0x0016), (0x0008, 0x0018), (0x0020, 0x000D),
                                        (0x0020, 0x000E)]))
            assert el is not None
            data = data[:el.offset] + data[el.offset + el.header + el.length:]
        elif kind == "junk-text":
            el = rng.choice([e for e in els if e.vr in (b"PN", b"LO", b"SH", b"CS", b"UI")])
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
            data = _replace_value(data, el, junk)
        elif kind == "path-uid":
            el = _find(els, rng.choice([(0x0008, 0x0018), (0x0020, 0x000D)]))
            assert el is not None
            data = _replace_value(data, el, rng.choice(
                [b"../../etc", b"../../../tmp/x", b"1.2/../../3", b"/etc/passwd", b"1.2.3\x00/..",
                 b"..", b"1.2.3.4\\..\\..\\x"]))
        elif kind == "deflate-bomb":
            ts = DeflatedExplicitVRLittleEndian
            # header elements, then a 64 MiB OB of zeros: ~64 KiB on the wire
            el = _find(els, (0x7FE0, 0x0010))
            head = data[:el.offset] if el is not None else data
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            data = (comp.compress(head + b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<L", 64 << 20))
                    + comp.flush(zlib.Z_FULL_FLUSH) + _zeros_deflated())
        elif kind == "byte-flip":
            buf = bytearray(data)
            for _ in range(rng.randrange(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf)
        else:
            raise ValueError(f"unknown mutation {kind!r}")
        return data, ts
