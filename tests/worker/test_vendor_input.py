"""Vendor input in the worker: calibration regions in any order, uncalibrated and conflicting images,
palette images, and cines decoded frame by frame."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from audit import AuditLog
from eusdx.config import Settings
from tests.worker.conftest import FakeBundle, RecordingExport, cohort_studies, copy_study
from worker.frames import load_study
from worker.pipeline import _model_frames, analyze_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _images(study: Path) -> list[Path]:
    return [p for p in sorted(study.glob("*.dcm"))
            if "SequenceOfUltrasoundRegions" in pydicom.dcmread(p, stop_before_pixels=True)]


def _with_regions(path: Path, make: Callable[[Dataset], list[Dataset]]) -> None:
    ds = pydicom.dcmread(path)
    ds.SequenceOfUltrasoundRegions = Sequence(make(ds.SequenceOfUltrasoundRegions[0]))
    ds.save_as(path)


def _copy(item: Dataset, **changes: object) -> Dataset:
    out = copy.deepcopy(item)
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def _overview(sector: Dataset) -> Dataset:
    """A small thumbnail region in the top-left corner, five times coarser: never the sector."""
    return _copy(sector, RegionLocationMinX0=0, RegionLocationMinY0=0, RegionLocationMaxX1=20,
                 RegionLocationMaxY1=12, PhysicalDeltaX=float(sector.PhysicalDeltaX) * 5,
                 PhysicalDeltaY=float(sector.PhysicalDeltaY) * 5)


def _doppler(sector: Dataset) -> Dataset:
    rows = int(sector.RegionLocationMaxY1)
    return _copy(sector, RegionSpatialFormat=3, RegionDataType=3, PhysicalUnitsYDirection=7,
                 RegionLocationMinY0=max(0, rows - 10), PhysicalDeltaY=1.5)


def _mpps(settings: Settings, uid: str) -> dict[str, float | None]:
    study = load_study(settings.spool_dir, uid, cine_max_frames=4, has_sector=FakeBundle().has_sector)
    return {f.key: f.mm_per_pixel for f in _model_frames(study)}


def test_region_order_never_changes_the_pixel_size(settings: Settings, phantom_cohort: Path) -> None:
    uid = cohort_studies(phantom_cohort)[0]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    reference = _mpps(settings, uid)
    assert reference and all(v for v in reference.values())
    originals = {p: pydicom.dcmread(p).SequenceOfUltrasoundRegions[0] for p in _images(folder)}
    for order in itertools.permutations(range(3)):
        for path, sector in originals.items():
            items = [_overview(sector), _doppler(sector), sector]
            _with_regions(path, lambda _s, items=items: [items[i] for i in order])
        assert _mpps(settings, uid) == reference, order


def test_uncalibrated_images_are_analysed_and_the_sr_says_so(
    settings: Settings, phantom_cohort: Path, fake_bundle: FakeBundle, audit_log: AuditLog,
    exporter: RecordingExport,
) -> None:
    uid = cohort_studies(phantom_cohort)[1]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    for path in _images(folder):
        ds = pydicom.dcmread(path)
        del ds.SequenceOfUltrasoundRegions
        ds.save_as(path)
    outcome = analyze_study(uid, settings=settings, bundle=fake_bundle, audit=audit_log,
                            export=exporter, device="cpu")
    assert outcome.status == "reported"
    [sr] = exporter.items.values()
    assert any("training median pixel size was assumed" in t for t in _texts(sr.ContentSequence))


def _texts(items: Sequence) -> list[str]:
    found = []
    for item in items:
        if "TextValue" in item:
            found.append(str(item.TextValue))
        found += _texts(item.get("ContentSequence", []))
    return found


def test_conflicting_regions_skip_the_frame_with_the_reason(settings: Settings, phantom_cohort: Path) -> None:
    uid = cohort_studies(phantom_cohort)[2]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    for path in _images(folder):
        _with_regions(path, lambda s: [s, _copy(s, PhysicalDeltaX=float(s.PhysicalDeltaX) * 3,
                                                PhysicalDeltaY=float(s.PhysicalDeltaY) * 3)])
    study = load_study(settings.spool_dir, uid, cine_max_frames=4, has_sector=FakeBundle().has_sector)
    assert study.frames == []
    reasons = {s.reason for s in study.skipped}
    assert any(r.startswith("calibration: ultrasound regions holding the sector disagree") for r in reasons)


def test_single_frame_palette_study_is_analysed(settings: Settings, phantom_cohort: Path) -> None:
    # The reported bug: single-frame PALETTE COLOR decoded to one row, the study failed as
    # "no B-mode sector". Re-encode a phantom image as an 8-bit palette image (grey ramp LUT).
    uid = cohort_studies(phantom_cohort)[0]
    folder = copy_study(phantom_cohort, uid, settings.spool_dir)
    path = next(p for p in _images(folder) if "NumberOfFrames" not in pydicom.dcmread(p, stop_before_pixels=True))
    ds = pydicom.dcmread(path)
    grey = np.asarray(ds.pixel_array)
    grey = grey if grey.ndim == 2 else grey[..., 0]
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.SamplesPerPixel = 1
    for tag in ("PlanarConfiguration",):
        if tag in ds:
            delattr(ds, tag)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ramp = (np.arange(256, dtype="<u2") << 8).tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", ramp)
    ds.PixelData = grey.astype(np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(path)
    study = load_study(settings.spool_dir, uid, cine_max_frames=4, has_sector=FakeBundle().has_sector)
    [frame] = [f for f in study.frames if f.path == path]
    assert frame.pixels.shape == grey.shape + (3,)
    assert np.array_equal(frame.pixels[..., 1], grey)
