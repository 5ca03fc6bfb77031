"""A whole EUS study as a PACS forwards it: images plus the non-image objects that travel with them.

Images are real vendor files of ``pydicom-data`` (re-identified into one study); the other objects
are minimal but valid headers of each class: a vendor Comprehensive SR, a Key Object Selection, a
Grayscale Softcopy Presentation State, an Encapsulated PDF, a Video Endoscopic image and a
vendor-private object. The node stores what it receives without decoding it, so headers suffice.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: A private SOP class (outside 1.2.840.10008): what a vendor's measurement package stores.
PRIVATE_SOP_CLASS = "1.3.6.1.4.1.5962.99.1.1234.1"

NON_IMAGE = {
    "comprehensive-sr": "1.2.840.10008.5.1.4.1.1.88.33",
    "key-object-selection": "1.2.840.10008.5.1.4.1.1.88.59",
    "grayscale-presentation-state": "1.2.840.10008.5.1.4.1.1.11.1",
    "encapsulated-pdf": "1.2.840.10008.5.1.4.1.1.104.1",
    "video-endoscopic": "1.2.840.10008.5.1.4.1.1.77.1.1.1",
    "private": PRIVATE_SOP_CLASS,
}


def _identify(ds: Dataset, study_uid: str, series_uid: str, number: int) -> None:
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "FWD-0001"
    ds.PatientName = "FORWARDED^TEST"
    ds.AccessionNumber = "ACC-FWD-1"
    ds.BodyPartExamined = "STOMACH"
    ds.InstanceNumber = number
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def image_copy(source: Path, target: Path, study_uid: str, series_uid: str, number: int) -> str:
    """Copy a vendor image into the study (same pixels, transfer syntax kept); its SOP UID."""
    ds = pydicom.dcmread(source)
    ds.Modality = "US"
    _identify(ds, study_uid, series_uid, number)
    ds.save_as(target)
    return str(ds.SOPInstanceUID)


def non_image(kind: str, study_uid: str, number: int) -> Dataset:
    """A header-only instance of one of :data:`NON_IMAGE`."""
    sop_class = NON_IMAGE[kind]
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.Modality = {"comprehensive-sr": "SR", "key-object-selection": "KO",
                   "grayscale-presentation-state": "PR", "encapsulated-pdf": "DOC",
                   "video-endoscopic": "ES"}.get(kind, "OT")
    ds.SeriesNumber = 90 + number
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    _identify(ds, study_uid, generate_uid(), number)
    if kind == "encapsulated-pdf":
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    if kind == "comprehensive-sr":
        ds.ValueType = "CONTAINER"
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    return ds


def forwarded_study(folder: Path, images: list[Path]) -> tuple[str, dict[str, str]]:
    """Write a study with ``images`` and one of each :data:`NON_IMAGE` into ``folder``.

    Returns the Study Instance UID and ``{SOP Instance UID: kind}`` (kind ``image`` for images).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    kinds: dict[str, str] = {}
    for n, source in enumerate(images, 1):
        uid = image_copy(source, folder / f"img{n}.dcm", study_uid, series_uid, n)
        kinds[uid] = "image"
    for n, kind in enumerate(NON_IMAGE, 1):
        ds = non_image(kind, study_uid, n)
        ds.save_as(folder / f"{kind}.dcm", enforce_file_format=True)
        kinds[str(ds.SOPInstanceUID)] = kind
    return study_uid, kinds
