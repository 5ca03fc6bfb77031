"""Helpers that build and split DICOM files for the node tests (no network)."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}


def data_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def dataset_offset(raw: bytes) -> int:
    """Offset of the data set in a DICOM file: after preamble, 'DICM' and group 0002."""
    assert raw[128:132] == b"DICM"
    pos = 132
    while pos + 8 <= len(raw):
        (group,) = struct.unpack_from("<H", raw, pos)
        if group != 0x0002:
            break
        vr = raw[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<L", raw, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            pos += 8 + length
    return pos


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a file: everything after the File Meta Information."""
    raw = Path(path).read_bytes()
    return raw[dataset_offset(raw):]


def raw_file(path: Path, *, sop_class: str, sop_uid: str, dataset: bytes,
             transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write a file whose meta says (sop_class, sop_uid, ts) and whose data set is ``dataset``
    verbatim (it may contradict the meta: that is the point)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = generate_uid()
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + fp.getvalue() + dataset)
    return path


def encode(ds: Dataset) -> bytes:
    """Explicit VR Little Endian encoding of a data set (no meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(fp, ds)
    return fp.getvalue()


def us_instance(*, study_uid: str | None = None, series_uid: str | None = None,
                body_part: str = "STOMACH", pixel_value: int = 0, rows: int = 16) -> Dataset:
    """A small, valid Ultrasound Image (RGB) with EUS routing attributes."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "US"
    ds.BodyPartExamined = body_part
    ds.SeriesDescription = "EUS stomach"
    ds.PatientID = "PHANTOM-1"
    ds.PatientName = "Phantom^Test"
    ds.AccessionNumber = "ACC1"
    ds.Rows, ds.Columns = rows, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes([pixel_value % 256]) * (rows * 16 * 3)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds
