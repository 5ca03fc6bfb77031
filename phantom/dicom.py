"""Write phantom images as real DICOM: Ultrasound (Multi-frame) Image Storage and a DICOM SEG per image.

Encodings as ultrasound devices send them: Explicit VR Little Endian (MONOCHROME2 or RGB), RLE Lossless
(RGB or MONOCHROME2) and JPEG Baseline 8-bit (YBR_FULL_422). pydicom 3 has no JPEG Baseline encoder, so
JPEG frames are made with Pillow (quality 90, 4:2:2 chroma) and encapsulated with pydicom.

Nothing here writes the pathology label or the lesion id: those live only in the manifest.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SegmentationStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from phantom.image import GEOMETRY, PhantomImage

__all__ = ["Encoding", "ENCODINGS", "StudyInfo", "phantom_uid", "to_display_array", "image_dataset", "seg_dataset"]

_IMPLEMENTATION = "eusdx phantom"


@dataclass(frozen=True)
class Encoding:
    """Transfer syntax and photometric interpretation of one series."""

    transfer_syntax: UID
    photometric: str

    @property
    def samples(self) -> int:
        return 1 if self.photometric == "MONOCHROME2" else 3


ENCODINGS: tuple[Encoding, ...] = (
    Encoding(ExplicitVRLittleEndian, "MONOCHROME2"),
    Encoding(JPEGBaseline8Bit, "YBR_FULL_422"),
    Encoding(RLELossless, "RGB"),
    Encoding(ExplicitVRLittleEndian, "RGB"),
    Encoding(RLELossless, "MONOCHROME2"),
)


@dataclass(frozen=True)
class StudyInfo:
    """Patient, study and equipment attributes shared by every instance of one phantom study."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    referring: str
    operator: str
    institution: str
    station: str
    manufacturer: str
    model: str
    serial: str
    software: str


def phantom_uid(*parts: object) -> str:
    """Deterministic UID from its parts (pydicom joins entropy sources without separator, so we add '|')."""
    return str(generate_uid(entropy_srcs=["eusdx-phantom|" + "|".join(str(p) for p in parts)]))


def to_display_array(image: PhantomImage, photometric: str) -> np.ndarray:
    """The array a device would store: grey, or RGB with tinted annotation text."""
    if photometric == "MONOCHROME2":
        return image.pixels.copy()
    rgb = np.repeat(image.pixels[:, :, None], 3, axis=2)
    # Processors print their overlay text in colour; tint it so colour images differ from grey ones.
    blue = rgb[:, :, 2]
    blue[image.text_mask] = (blue[image.text_mask].astype(np.uint16) * 5 // 8).astype(np.uint8)
    return rgb


def _base(info: StudyInfo, sop_class: str, sop_uid: str, series_uid: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.ImplementationVersionName = "EUSDX_PHANTOM"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = info.study_date
    ds.InstanceCreationTime = info.study_time
    ds.StudyDate = info.study_date
    ds.SeriesDate = info.study_date
    ds.ContentDate = info.study_date
    ds.StudyTime = info.study_time
    ds.SeriesTime = info.study_time
    ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession
    ds.Modality = "US"
    ds.Manufacturer = info.manufacturer
    ds.InstitutionName = info.institution
    ds.ReferringPhysicianName = info.referring
    ds.StationName = info.station
    ds.StudyDescription = "EUS upper GI"
    ds.SeriesDescription = "EUS stomach"
    ds.OperatorsName = info.operator
    ds.ManufacturerModelName = info.model
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.birth_date
    ds.PatientSex = info.sex
    ds.PatientAge = info.age
    ds.BodyPartExamined = "STOMACH"
    ds.DeviceSerialNumber = info.serial
    ds.SoftwareVersions = info.software
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = info.study_id
    ds.SeriesNumber = series_number
    return ds


def _us_region(image: PhantomImage) -> Dataset:
    g = GEOMETRY
    ys, xs = np.nonzero(image.sector_mask)
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D (tissue or flow)
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = int(xs.min())
    region.RegionLocationMinY0 = int(ys.min())
    region.RegionLocationMaxX1 = int(xs.max())
    region.RegionLocationMaxY1 = int(ys.max())
    region.ReferencePixelX0 = int(round(g.apex_x))
    region.ReferencePixelY0 = int(round(g.apex_y + g.r0_px))
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalDeltaX = image.mm_per_pixel / 10.0
    region.PhysicalDeltaY = image.mm_per_pixel / 10.0
    region.TransducerFrequency = int(round(image.frequency_mhz * 1000))  # kHz
    return region


def _jpeg_frame(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=90, subsampling=1, optimize=False)
    return buf.getvalue()


def image_dataset(
    info: StudyInfo,
    frames: Sequence[PhantomImage],
    *,
    encoding: Encoding,
    sop_uid: str,
    series_uid: str,
    series_number: int,
    instance_number: int,
    acquisition_time: str,
    frame_time_ms: float = 40.0,
) -> tuple[Dataset, np.ndarray]:
    """Build one ultrasound instance (single-frame, or multi-frame cine when ``len(frames) > 1``).

    Parameters
    ----------
    info : StudyInfo
        Patient/study/equipment attributes.
    frames : sequence of PhantomImage
        The images; all frames of a cine share one depth range (pixel size).
    encoding : Encoding
        Transfer syntax and photometric interpretation.
    sop_uid, series_uid : str
        Instance and series UIDs.
    series_number, instance_number : int
        As written into the dataset.
    acquisition_time : str
        DICOM TM of this acquisition.
    frame_time_ms : float
        Frame time of a cine.

    Returns
    -------
    tuple of (pydicom.Dataset, numpy.ndarray)
        The dataset ready for ``save_as`` and the array that was encoded ((H, W[, 3]) or (F, H, W[, 3])).
    """
    multi = len(frames) > 1
    sop_class = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    ds = _base(info, sop_class, sop_uid, series_uid, series_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ENDOCAVITARY", "0001"]  # 0001: 2D (B-mode) imaging
    ds.AcquisitionDate = info.study_date
    ds.AcquisitionTime = acquisition_time
    ds.ContentTime = acquisition_time
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "NO"
    first = frames[0]
    arrays = [to_display_array(f, encoding.photometric) for f in frames]
    arr = np.stack(arrays) if multi else arrays[0]
    ds.SamplesPerPixel = encoding.samples
    ds.PhotometricInterpretation = "RGB" if encoding.samples == 3 else "MONOCHROME2"
    if encoding.samples == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = first.pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SequenceOfUltrasoundRegions = DicomSequence([_us_region(first)])
    if multi:
        ds.NumberOfFrames = len(frames)
        ds.FrameIncrementPointer = Tag("FrameTime")
        ds.FrameTime = f"{frame_time_ms:.1f}"
        ds.CineRate = int(round(1000.0 / frame_time_ms))
        ds.RecommendedDisplayFrameRate = ds.CineRate
        ds.StartTrim = 1
        ds.StopTrim = len(frames)
    ds.file_meta.TransferSyntaxUID = encoding.transfer_syntax
    if encoding.transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = arr.tobytes()
        ds.LossyImageCompression = "00"
    elif encoding.transfer_syntax == RLELossless:
        ds.compress(RLELossless, arr, generate_instance_uid=False)
        ds.LossyImageCompression = "00"
    elif encoding.transfer_syntax == JPEGBaseline8Bit:
        stack = arr if multi else arr[None]
        fragments = [_jpeg_frame(f) for f in stack]
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = f"{arr.nbytes / sum(len(f) for f in fragments):.2f}"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:  # pragma: no cover - ENCODINGS is closed
        raise ValueError(f"unsupported transfer syntax {encoding.transfer_syntax}")
    return ds, arr


def _segment_description() -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )


def _single_frame_proxy(source: Dataset) -> Dataset:
    """A single-frame stand-in for a cine, so highdicom builds the SEG skeleton (it refuses multi-frame
    sources without a frame of reference); the references are made multi-frame afterwards."""
    proxy = Dataset()
    for elem in source:
        if elem.keyword not in ("PixelData", "NumberOfFrames", "FrameIncrementPointer"):
            proxy.add(copy.deepcopy(elem))
    proxy.file_meta = copy.deepcopy(source.file_meta)
    proxy.SOPClassUID = UltrasoundImageStorage
    return proxy


def seg_dataset(
    info: StudyInfo,
    source: Dataset,
    masks: np.ndarray,
    *,
    sop_uid: str,
    series_uid: str,
    series_number: int,
    instance_number: int,
) -> Dataset:
    """Build a binary DICOM SEG with one segment "Lesion" for one source instance.

    Parameters
    ----------
    info : StudyInfo
        Study attributes (for deterministic dates and UIDs).
    source : pydicom.Dataset
        The ultrasound instance the masks belong to (single- or multi-frame).
    masks : numpy.ndarray
        (F, H, W) bool, one mask per source frame.
    sop_uid, series_uid : str
        UIDs of the SEG.
    series_number, instance_number : int
        As written into the dataset.

    Returns
    -------
    pydicom.Dataset
        The segmentation, ready for ``save_as``.
    """
    n_frames = int(getattr(source, "NumberOfFrames", 1))
    if masks.shape[0] != n_frames:
        raise ValueError(f"masks has {masks.shape[0]} frames, source has {n_frames}")
    proxy = _single_frame_proxy(source) if n_frames > 1 else source
    seg = hd.seg.Segmentation(
        source_images=[proxy],
        pixel_array=masks[:1].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description()],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=info.manufacturer,
        manufacturer_model_name=info.model,
        software_versions=info.software,
        device_serial_number=info.serial,
        content_label="LESION",
        content_description="Lesion outline",
        content_creator_name="PHANTOM^GENERATOR",
        omit_empty_frames=False,
    )
    if n_frames > 1:
        _make_multiframe(seg, source, masks)
    _make_deterministic(seg, info, sop_uid)
    seg.SeriesDescription = "EUS stomach segmentation"
    seg.PatientOrientation = ""
    seg.BodyPartExamined = "STOMACH"
    seg.InstitutionName = info.institution
    seg.StationName = info.station
    return seg


def _make_multiframe(seg: Dataset, source: Dataset, masks: np.ndarray) -> None:
    """Turn the one-frame skeleton into one SEG frame per cine frame, indexed by temporal position."""
    for series in seg.ReferencedSeriesSequence:
        for ref in series.ReferencedInstanceSequence:
            ref.ReferencedSOPClassUID = source.SOPClassUID
    for ref in seg.SourceImageSequence:
        ref.ReferencedSOPClassUID = source.SOPClassUID
    template = seg.PerFrameFunctionalGroupsSequence[0]
    dim_uid = seg.DimensionOrganizationSequence[0].DimensionOrganizationUID
    temporal = Dataset()
    temporal.DimensionOrganizationUID = dim_uid
    temporal.DimensionIndexPointer = Tag("TemporalPositionIndex")
    temporal.FunctionalGroupPointer = Tag("FrameContentSequence")
    temporal.DimensionDescriptionLabel = "Temporal Position Index"
    seg.DimensionIndexSequence.append(temporal)
    items = []
    for t in range(masks.shape[0]):
        item = Dataset()
        deriv = Dataset()
        src_ref = Dataset()
        tmpl_ref = template.DerivationImageSequence[0].SourceImageSequence[0]
        src_ref.ReferencedSOPClassUID = source.SOPClassUID
        src_ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        src_ref.ReferencedFrameNumber = t + 1
        src_ref.SpatialLocationsPreserved = "YES"
        src_ref.PurposeOfReferenceCodeSequence = tmpl_ref.PurposeOfReferenceCodeSequence
        deriv.SourceImageSequence = DicomSequence([src_ref])
        deriv.DerivationCodeSequence = template.DerivationImageSequence[0].DerivationCodeSequence
        item.DerivationImageSequence = DicomSequence([deriv])
        content = Dataset()
        content.DimensionIndexValues = [1, t + 1]
        content.TemporalPositionIndex = t + 1
        item.FrameContentSequence = DicomSequence([content])
        items.append(item)
    seg.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    seg.NumberOfFrames = masks.shape[0]
    packed = pack_bits(masks.astype(np.uint8).ravel())
    seg.PixelData = packed + (b"\x00" if len(packed) % 2 else b"")


def _make_deterministic(seg: Dataset, info: StudyInfo, sop_uid: str) -> None:
    """Replace the wall-clock dates and random UIDs highdicom writes, so a seed gives identical bytes."""
    for kw in ("ContentDate", "InstanceCreationDate", "SeriesDate"):
        setattr(seg, kw, info.study_date)
    for kw in ("ContentTime", "InstanceCreationTime", "SeriesTime"):
        setattr(seg, kw, info.study_time)
    for item in getattr(seg, "ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = info.study_date + info.study_time
    dim_uid = phantom_uid("dimension-organization", sop_uid)
    for item in seg.DimensionOrganizationSequence:
        item.DimensionOrganizationUID = dim_uid
    for item in seg.DimensionIndexSequence:
        item.DimensionOrganizationUID = dim_uid
    if SegmentationStorage != seg.SOPClassUID:  # pragma: no cover - highdicom contract
        raise ValueError("highdicom did not return a Segmentation")
