"""models.pixels: every ultrasound photometric and layout decodes to the right display pixels.

Real files: every ultrasound file of ``pydicom-data`` (GE, Philips, SonoSite, ALOKA) and of pydicom's
own test files, each with its expected frame count and shape; lossless pairs decode bit-identical.
Generated files: every photometric x planar configuration x frames x bits, checked against the
standard's formulas (tests/models/_layouts.py), decoded from a dataset and frame by frame from a file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eusdx.errors import DataError
from models.dicom_io import read_instance
from models.pixels import PixelDecodeError, decode_frames, frame_count, to_display
from tests.models._layouts import PHOTOMETRICS, Layout, make_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def data_file(name: str) -> Path:
    """A file of pydicom-data (``data_store``) or of pydicom's own test files."""
    import data_store

    here = Path(data_store.__file__).parent / "data" / name
    if here.is_file():
        return here
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    assert found, name
    return Path(str(found))


#: file -> (photometric as stored, frames, shape of one decoded frame). Every ultrasound file.
ULTRASOUND = {
    "JPGLosslessP14SV1_1s_1f_8b.dcm": ("MONOCHROME2", 1, (768, 1024)),
    "OBXXXX1A.dcm": ("PALETTE COLOR", 1, (600, 800, 3)),
    "OBXXXX1A_2frame.dcm": ("PALETTE COLOR", 2, (600, 800, 3)),
    "OBXXXX1A_expb.dcm": ("PALETTE COLOR", 1, (600, 800, 3)),
    "OBXXXX1A_expb_2frame.dcm": ("PALETTE COLOR", 2, (600, 800, 3)),
    "OBXXXX1A_rle.dcm": ("PALETTE COLOR", 1, (600, 800, 3)),
    "OBXXXX1A_rle_2frame.dcm": ("PALETTE COLOR", 2, (600, 800, 3)),
    "US1_J2KI.dcm": ("YBR_ICT", 1, (480, 640, 3)),
    "US1_J2KR.dcm": ("YBR_RCT", 1, (480, 640, 3)),
    "US1_UNCI.dcm": ("RGB", 1, (480, 640, 3)),
    "US1_UNCR.dcm": ("RGB", 1, (480, 640, 3)),
    "color-pl.dcm": ("RGB", 1, (120, 256, 3)),
    "color-px.dcm": ("RGB", 1, (120, 256, 3)),
    "color3d_jpeg_baseline.dcm": ("YBR_FULL_422", 120, (480, 640, 3)),
    "gdcm-US-ALOKA-16.dcm": ("PALETTE COLOR", 1, (480, 640, 3)),
    "gdcm-US-ALOKA-16_big.dcm": ("PALETTE COLOR", 1, (480, 640, 3)),
    "ExplVR_BigEnd.dcm": ("RGB", 1, (60, 80, 3)),
    "examples_jpeg2k.dcm": ("YBR_RCT", 1, (480, 640, 3)),
    "examples_palette.dcm": ("PALETTE COLOR", 1, (350, 800, 3)),
    "examples_rgb_color.dcm": ("RGB", 1, (240, 320, 3)),
    "examples_ybr_color.dcm": ("YBR_FULL_422", 30, (240, 320, 3)),
}

#: Other photometrics ultrasound writers use, from files of other modalities.
OTHER = {
    "SC_ybr_full_uncompressed.dcm": ("YBR_FULL", 1, (100, 100, 3)),
    "SC_ybr_full_422_uncompressed.dcm": ("YBR_FULL_422", 1, (100, 100, 3)),
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": ("YBR_FULL", 1, (100, 100, 3)),
    "SC_rgb_16bit_2frame.dcm": ("RGB", 2, (100, 100, 3)),
    "RG1_UNCR.dcm": ("MONOCHROME1", 1, (1955, 1841)),
    "MR_small.dcm": ("MONOCHROME2", 1, (64, 64)),
    "emri_small.dcm": ("MONOCHROME2", 10, (64, 64)),
}

#: Lossless encodings of the same pixels: the first is the reference.
LOSSLESS_GROUPS = [
    ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"),
    ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_rle_2frame.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),
    ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"),
    ("color-px.dcm", "color-pl.dcm"),
    ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),
    ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm"),
    ("emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
     "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"),
]


def _sample(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


@pytest.mark.parametrize("name", sorted({**ULTRASOUND, **OTHER}))
def test_every_file_decodes_to_its_shape(name: str) -> None:
    photometric, frames, shape = {**ULTRASOUND, **OTHER}[name]
    path = data_file(name)
    head = pydicom.dcmread(path, stop_before_pixels=True)
    assert str(head.PhotometricInterpretation) == photometric
    assert frame_count(head) == frames
    picks = _sample(frames)
    from_file = decode_frames(path, picks, header=head)
    from_dataset = decode_frames(pydicom.dcmread(path), picks)
    for a, b in zip(from_file, from_dataset):
        assert a.shape == shape and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert max(int(f.max()) for f in from_file) > 0  # not a blank decode


def test_every_ultrasound_file_of_pydicom_data_is_in_the_table() -> None:
    import data_store

    folder = Path(data_store.__file__).parent / "data"
    found = set()
    for path in folder.glob("*.dcm"):
        try:
            head = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if head.get("Modality") == "US":
            found.add(path.name)
    assert found <= set(ULTRASOUND), sorted(found - set(ULTRASOUND))


def test_single_frame_palette_is_an_image_not_a_row() -> None:
    # the bug this module replaces: row 0 of the palette output, shape (800, 3)
    (frame,) = decode_frames(data_file("OBXXXX1A.dcm"))
    assert frame.shape == (600, 800, 3)
    assert read_instance(data_file("gdcm-US-ALOKA-16.dcm")).frames[0].shape == (480, 640, 3)


@pytest.mark.parametrize("group", LOSSLESS_GROUPS, ids=lambda g: g[0])
def test_lossless_encodings_decode_bit_identical(group: tuple[str, ...]) -> None:
    reference = decode_frames(data_file(group[0]))
    for other in group[1:]:
        frames = decode_frames(data_file(other))
        assert len(frames) == len(reference)
        for a, b in zip(reference, frames):
            assert np.array_equal(a, b), other


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "examples_palette.dcm"])  # ALOKA: segmented LUT
def test_palette_matches_the_lut_applied_by_hand(name: str) -> None:
    # PS3.3 C.7.6.3.1.5: colour = LUT[index - first mapped]; 16-bit entries, high byte kept
    ds = pydicom.dcmread(data_file(name))
    count, first, bits = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    assert bits == 16
    count = count or 65536
    order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
    luts = [np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, dtype=order + "u2")[:count]
            for c in ("Red", "Green", "Blue")]
    index = np.clip(np.asarray(ds.pixel_array).astype(np.int64) - first, 0, count - 1)
    expected = np.stack([(lut[index] >> 8) for lut in luts], axis=-1).astype(np.uint8)
    (got,) = decode_frames(ds)
    assert np.array_equal(got, expected)


def test_one_frame_alone_equals_that_frame_of_the_whole_cine() -> None:
    path = data_file("examples_ybr_color.dcm")
    everything = decode_frames(path)
    assert len(everything) == 30
    for k in (0, 7, 29):
        assert np.array_equal(decode_frames(path, [k])[0], everything[k])
    again = decode_frames(path, [29, 3, 29])
    assert [np.array_equal(a, everything[k]) for a, k in zip(again, (29, 3, 29))] == [True] * 3


def test_out_of_range_frame_is_a_data_error() -> None:
    with pytest.raises(DataError, match="asked of an instance with 2"):
        decode_frames(data_file("OBXXXX1A_2frame.dcm"), [2])


def test_truncated_pixel_data_is_a_decode_error(tmp_path: Path) -> None:
    ds = pydicom.dcmread(data_file("OBXXXX1A_rle.dcm"))
    ds.PixelData = ds.PixelData[:200]
    path = tmp_path / "cut.dcm"
    ds.save_as(path)
    with pytest.raises(PixelDecodeError, match="cannot decode pixel data"):
        decode_frames(path)


def test_window_and_monochrome1_follow_the_standard() -> None:
    ds, _ = make_image(Layout("MONOCHROME1", 0, 1, 16, 2, 2, False), 0)
    ds.WindowCenter, ds.WindowWidth = 1000, 201
    # C.11.2.1.2.1: below c - 0.5 - (w-1)/2 = 899.5 is black, above 1099.5 white (then inverted)
    frame = np.array([[0, 899], [1100, 4000]], dtype=np.uint16)
    assert to_display(frame, ds).tolist() == [[255, 255], [0, 0]]


_LAYOUTS = st.builds(
    Layout,
    photometric=st.sampled_from(PHOTOMETRICS),
    planar=st.sampled_from([0, 1]),
    frames=st.integers(1, 3),
    bits=st.sampled_from([8, 16]),
    rows=st.integers(1, 9),
    cols=st.integers(1, 6).map(lambda c: 2 * c),
    multi=st.booleans(),
).filter(lambda lo: lo.multi or lo.frames == 1).filter(
    lambda lo: not (lo.photometric.startswith("YBR") and lo.bits != 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=_LAYOUTS, seed=st.integers(0, 2**16))
def test_generated_layouts_decode_to_the_standard_pixels(layout: Layout, seed: int) -> None:
    ds, expected = make_image(layout, seed)
    got = decode_frames(ds)
    assert len(got) == layout.frames
    for frame, want in zip(got, expected):
        assert frame.shape == want.shape and frame.dtype == np.uint8
        # YBR to RGB rounds differently by at most one level; everything else is exact
        tolerance = 1 if layout.photometric.startswith("YBR") else 0
        assert int(np.abs(frame.astype(np.int16) - want).max()) <= tolerance
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.dcm"
        ds.save_as(path, enforce_file_format=True)
        last = layout.frames - 1
        from_file = decode_frames(path, [last, 0])
        assert np.array_equal(from_file[0], got[last]) and np.array_equal(from_file[1], got[0])
