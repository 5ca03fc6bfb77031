"""Synthetic EUS phantom: GIST and leiomyoma lesions as real DICOM studies plus a labelled manifest.

Public API
----------
- :class:`LesionSpec`, :func:`sample_lesion`: lesions following paper 002, Table 1 (``phantom.spec``).
- :func:`render_image` -> :class:`PhantomImage`: one B-mode image in memory (``phantom.image``).
- :func:`plan_cohort` -> list of :class:`StudyPlan`: every patient's lesion, study attributes, device and
  views, decided before any pixel is rendered (cheap; the shortcut tests read acquisition from it).
- :func:`generate_cohort`: DICOM studies under ``OUT/studies/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` and
  ``OUT/manifest.csv`` with one row per analysable image (per frame for cines).

Acquisition is blind to the class: each patient's device (from the centre's set), depth preset, gain,
number of images and cine come from a random stream that never sees the label or the lesion, so header
fields and burned-in text carry no class information. ``size_matched=True`` also removes size as a cue.

The pathology label and lesion id are written only to the manifest, never into DICOM. Everything is
deterministic for a given seed (and centre). Phantom results say the software works; they are never a
clinical claim.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from phantom.dicom import ENCODINGS, StudyInfo, image_dataset, phantom_uid, seg_dataset
from phantom.image import (
    INTERNAL_DEVICES,
    Device,
    PhantomImage,
    ViewParams,
    device_for_centre,
    device_speckle,
    devices_for_centre,
    draw_depth,
    draw_view,
    render_image,
    render_view,
)
from phantom.spec import DEFAULT_DIFFICULTY, LABELS, LAYERS, TABLE1, LesionSpec, sample_lesion

__all__ = [
    "DEFAULT_DIFFICULTY",
    "LABELS",
    "LAYERS",
    "MANIFEST_COLUMNS",
    "TABLE1",
    "INTERNAL_DEVICES",
    "Device",
    "LesionSpec",
    "PhantomImage",
    "StudyPlan",
    "ViewParams",
    "device_for_centre",
    "devices_for_centre",
    "generate_cohort",
    "plan_cohort",
    "render_cine",
    "render_image",
    "sample_lesion",
]

MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_path",
    "frame",
    "seg_path",
    "label",
    "patient_id",
    "lesion_id",
    "centre",
    "study_uid",
    "series_uid",
    "sop_uid",
    "layer",
    "size_mm",
    "echo_pattern",
    "device",
)
_CENTRE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_BASE_DATE = _dt.date(2023, 1, 2)
_VERSION = "eusdx-phantom 2"


def cine_views(rng: np.random.Generator, spec: LesionSpec, n_frames: int, device: Device | None = None,
               depth_mm: float | None = None) -> list[ViewParams]:
    """The views of a short cine loop: one depth range, the probe drifting slowly in angle and tilt."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    base = draw_view(rng, spec, 1, device, depth_mm)
    d_lat, d_tilt = rng.normal(0, 0.6), rng.normal(0, 1.0)
    return [replace(base, lateral_deg=base.lateral_deg + t * d_lat, wall_tilt_deg=base.wall_tilt_deg + t * d_tilt)
            for t in range(n_frames)]


def _render_frames(rng: np.random.Generator, spec: LesionSpec, views: list[ViewParams], device: Device,
                   annotations: dict[str, str] | None) -> list[PhantomImage]:
    # Speckle decorrelates partly between frames (correlation 0.75).
    z = device_speckle(rng, device)
    frames = []
    for t, view in enumerate(views):
        if t:
            z = 0.75 * z + np.sqrt(1 - 0.75**2) * device_speckle(rng, device)
        frames.append(render_view(spec, view, z, annotations=annotations, frequency_mhz=device.frequency_mhz))
    return frames


def render_cine(
    rng: np.random.Generator,
    spec: LesionSpec,
    n_frames: int,
    *,
    annotations: dict[str, str] | None = None,
    device: Device | None = None,
) -> list[PhantomImage]:
    """Render a short cine loop: the probe drifts slowly and speckle decorrelates partly between frames.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the view and speckle.
    spec : LesionSpec
        The lesion.
    n_frames : int
        Number of frames (>= 1).
    annotations : dict of str, optional
        Burned-in text, as for :func:`render_image`.
    device : Device, optional
        The processor, as for :func:`render_image`.

    Returns
    -------
    list of PhantomImage
        The frames; they share one depth range, so one pixel size.

    Raises
    ------
    ValueError
        If ``n_frames < 1``.
    """
    dev = device or Device()
    return _render_frames(rng, spec, cine_views(rng, spec, n_frames, dev), dev, annotations)


@dataclass(frozen=True)
class StudyPlan:
    """One phantom patient's study, decided before rendering.

    Attributes
    ----------
    index : int
        Position in the cohort.
    label, patient_id, lesion_id : str
        Pathology and identifiers (the label and lesion id never go into DICOM).
    spec : LesionSpec
        The lesion.
    info : StudyInfo
        Patient, study and equipment attributes (equipment from ``device``).
    device : Device
        The processor + probe of this study (drawn from the centre's devices, blind to the class).
    stills : tuple of ViewParams
        One view per still image (the first is the canonical view).
    cine : tuple of ViewParams
        The frames of the cine loop (empty: no cine).
    render_seed : tuple of int
        Seed of the speckle stream.
    seed : int
        The cohort seed (it picks the encodings).
    """

    index: int
    label: str
    patient_id: str
    lesion_id: str
    spec: LesionSpec
    info: StudyInfo
    device: Device
    stills: tuple[ViewParams, ...]
    cine: tuple[ViewParams, ...]
    render_seed: tuple[int, ...]
    seed: int = 0

    @property
    def annotations(self) -> dict[str, str]:
        """The burned-in text of this study's images."""
        info = self.info
        sd = info.study_date
        return {
            "name": info.patient_name,
            "patient_id": info.patient_id,
            "date": f"{sd[:4]}/{sd[4:6]}/{sd[6:]}",
            "time": f"{info.study_time[:2]}:{info.study_time[2:4]}:{info.study_time[4:]}",
            "institution": info.institution[:28].upper(),
            "device": info.model,
        }

    def render(self) -> tuple[list[PhantomImage], list[PhantomImage]]:
        """Render every still and the cine frames (deterministic; about 0.1 s per image)."""
        rng = np.random.default_rng(list(self.render_seed))
        ann = self.annotations
        stills = [render_view(self.spec, v, device_speckle(rng, self.device), annotations=ann,
                              frequency_mhz=self.device.frequency_mhz) for v in self.stills]
        cine = _render_frames(rng, self.spec, list(self.cine), self.device, ann) if self.cine else []
        return stills, cine

    def header_fields(self) -> list[dict[str, object]]:
        """Per written instance, the fields ``models.baselines.header_fields_from_dataset`` reads back from
        its DICOM header (stills first, then the cine); equal to them by test, without writing a file."""
        from pydicom.uid import UltrasoundImageStorage, UltrasoundMultiFrameImageStorage

        from phantom.image import GEOMETRY

        info = self.info
        age = info.age
        out = []
        series = [(v, 1, self.index + self.seed) for v in self.stills]
        if self.cine:
            series.append((self.cine[0], len(self.cine), self.index + self.seed + 2))
        for view, frames, enc_index in series:
            enc = ENCODINGS[enc_index % len(ENCODINGS)]
            out.append({
                "mm_per_pixel": view.depth_mm / GEOMETRY.depth_px,
                "transducer_frequency_khz": float(int(round(self.device.frequency_mhz * 1000))),
                "rows": float(GEOMETRY.rows),
                "columns": float(GEOMETRY.cols),
                "frames": float(frames),
                "patient_age_years": float(age[:3]),
                "study_day": float(_dt.date(int(info.study_date[:4]), int(info.study_date[4:6]),
                                            int(info.study_date[6:])).toordinal()),
                "study_time_s": float(int(info.study_time[:2]) * 3600 + int(info.study_time[2:4]) * 60
                                      + int(info.study_time[4:6])),
                "manufacturer": info.manufacturer,
                "model": info.model,
                "station": info.station,
                "photometric": "MONOCHROME2" if enc.samples == 1 else (
                    "YBR_FULL_422" if enc.photometric == "YBR_FULL_422" else "RGB"),
                "transfer_syntax": str(enc.transfer_syntax),
                "sop_class": str(UltrasoundMultiFrameImageStorage if frames > 1 else UltrasoundImageStorage),
                "patient_sex": info.sex,
            })
        return out

    def render_first(self) -> PhantomImage:
        """Only the first (canonical) still, exactly as :meth:`render` makes it."""
        rng = np.random.default_rng(list(self.render_seed))
        return render_view(self.spec, self.stills[0], device_speckle(rng, self.device), annotations=self.annotations,
                           frequency_mhz=self.device.frequency_mhz)


def _patient_prefix(centre: str) -> str:
    return "P" if centre == "internal" else re.sub(r"[^A-Z0-9]", "", centre.upper())[:6] + "P"


def _years_before(day: _dt.date, years: int) -> _dt.date:
    """The same calendar day ``years`` earlier; 29 February falls back to the 28th in common years."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _study_info(rng: np.random.Generator, seed: int, centre: str, i: int, patient_id: str, device: Device,
                station: int) -> StudyInfo:
    study_day = _BASE_DATE + _dt.timedelta(days=int(rng.integers(0, 700)))
    secs = int(rng.integers(8 * 3600, 17 * 3600))
    age = int(rng.integers(35, 80))
    birth = _years_before(study_day, age) - _dt.timedelta(days=int(rng.integers(1, 360)))
    institution = "Phantom General Hospital" if centre == "internal" else f"Phantom {centre} Hospital"
    return StudyInfo(
        patient_name=f"PHANTOM^{patient_id}",
        patient_id=patient_id,
        birth_date=birth.strftime("%Y%m%d"),
        sex="M" if rng.random() < 0.4 else "F",
        age=f"{age:03d}Y",
        study_uid=phantom_uid(seed, centre, i, "study"),
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
        accession=f"ACC{zlib.crc32(f'{seed}|{centre}|{i}'.encode()) % 10**9:09d}",
        study_id=f"{i + 1}",
        referring="REFERRER^PHANTOM",
        operator="ENDOSCOPIST^PHANTOM",
        institution=institution,
        station=f"EUS{station + 1:02d}" if centre == "internal" else f"EUS-{centre[:10].upper()}-{station + 1}",
        manufacturer="eusdx phantom",
        model=device.model,
        serial=f"PH{zlib.crc32(f'{centre}|{device.model}'.encode()) % 100000:05d}",
        software=_VERSION,
    )


def plan_cohort(
    patients: int,
    seed: int,
    *,
    difficulty: float = DEFAULT_DIFFICULTY,
    centre: str = "internal",
    gist_fraction: float = 0.5,
    size_matched: bool = False,
) -> list[StudyPlan]:
    """Decide every patient's lesion, study attributes, device and views (no rendering).

    Three independent random streams per patient: the lesion (label-dependent), the acquisition (device,
    depth preset, gain, views, number of images, cine length: never sees the label or the lesion's
    size) and the speckle. The arguments are those of :func:`generate_cohort`.

    Returns
    -------
    list of StudyPlan
        One per patient, in cohort order.
    """
    n_gist = int(round(patients * gist_fraction))
    labels = np.array([LABELS[0]] * n_gist + [LABELS[1]] * (patients - n_gist))
    np.random.default_rng([seed, 0xC0]).shuffle(labels)
    centre_key = zlib.crc32(centre.encode())
    prefix = _patient_prefix(centre)
    devices = devices_for_centre(centre)
    plans = []
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, centre_key, i])
        acq = np.random.default_rng([seed, centre_key, i, 0xAC])
        patient_id = f"{prefix}{i + 1:04d}"
        lesion_id = "LES-" + hashlib.sha256(f"{seed}|{centre}|{i}|lesion".encode()).hexdigest()[:12]
        spec = sample_lesion(rng, str(label), difficulty, size_matched=size_matched)
        d = int(acq.integers(0, len(devices)))
        device = devices[d]
        info = _study_info(rng, seed, centre, i, patient_id, device, d)
        depth = draw_depth(acq, device)
        n_still = int(acq.integers(3, 9))
        stills = tuple(draw_view(acq, spec, v, device, depth) for v in range(n_still))
        cine: tuple[ViewParams, ...] = ()
        if (i + seed) % 3 == 0:
            cine = tuple(cine_views(acq, spec, int(acq.integers(5, 11)), device, depth))
        plans.append(StudyPlan(i, str(label), patient_id, lesion_id, spec, info, device, stills, cine,
                               (seed, centre_key, i, 0x5E), seed))
    return plans


def _fmt_time(base: str, offset_s: int) -> str:
    secs = int(base[:2]) * 3600 + int(base[2:4]) * 60 + int(base[4:6]) + offset_s
    secs = min(secs, 23 * 3600 + 59 * 60 + 59)
    return f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}"


def _write_patient(p: StudyPlan, out: Path, seed: int, centre: str) -> list[dict[str, str]]:
    info = p.info
    study_dir = out / "studies" / info.study_uid
    study_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    common = {
        "label": p.label,
        "patient_id": p.patient_id,
        "lesion_id": p.lesion_id,
        "centre": centre,
        "study_uid": info.study_uid,
        "layer": p.spec.layer,
        "size_mm": f"{p.spec.size_mm:.2f}",
        "echo_pattern": p.spec.echo_pattern,
        "device": p.device.model,
    }

    def write(frames: list[PhantomImage], series_no: int, inst: int, enc_index: int) -> None:
        kind = "cine" if len(frames) > 1 else "still"
        series_uid = phantom_uid(seed, centre, p.index, "series", series_no)
        sop_uid = phantom_uid(seed, centre, p.index, kind, inst)
        ds, _ = image_dataset(
            info,
            frames,
            encoding=ENCODINGS[enc_index % len(ENCODINGS)],
            sop_uid=sop_uid,
            series_uid=series_uid,
            series_number=series_no,
            instance_number=inst,
            acquisition_time=_fmt_time(info.study_time, 20 * inst + 300 * (series_no - 1)),
        )
        if len(frames) > 1:
            ds.SeriesDescription = "EUS stomach cine"
        image_path = study_dir / f"{sop_uid}.dcm"
        ds.save_as(image_path, enforce_file_format=True)
        seg_series = phantom_uid(seed, centre, p.index, "seg-series", series_no)
        seg_uid = phantom_uid(seed, centre, p.index, "seg", kind, inst)
        seg = seg_dataset(
            info,
            ds,
            np.stack([f.mask for f in frames]),
            sop_uid=seg_uid,
            series_uid=seg_series,
            series_number=100 + series_no,
            instance_number=inst,
        )
        seg_path = study_dir / f"{seg_uid}.dcm"
        seg.save_as(seg_path, enforce_file_format=True)
        for t in range(len(frames)):
            rows.append(
                {
                    "image_path": image_path.relative_to(out).as_posix(),
                    "frame": str(t),
                    "seg_path": seg_path.relative_to(out).as_posix(),
                    "series_uid": series_uid,
                    "sop_uid": sop_uid,
                    **common,
                }
            )

    stills, cine = p.render()
    for v, image in enumerate(stills):
        write([image], 1, v + 1, p.index + seed)
    if cine:
        write(cine, 2, 1, p.index + seed + 2)
    return rows


def generate_cohort(
    out_dir: Path,
    patients: int,
    seed: int,
    *,
    difficulty: float = DEFAULT_DIFFICULTY,
    centre: str = "internal",
    gist_fraction: float = 0.5,
    size_matched: bool = False,
    progress: bool = False,
) -> Path:
    """Write a phantom cohort: one study per patient, one lesion each, and a manifest.

    Parameters
    ----------
    out_dir : pathlib.Path
        Output folder (created). Studies go to ``studies/<StudyInstanceUID>/``.
    patients : int
        Number of patients (>= 1).
    seed : int
        Seed (>= 0); the same seed and centre give byte-identical files.
    difficulty : float
        Class overlap in [0, 1] (see :func:`sample_lesion`).
    centre : str
        Centre name written to the manifest (and the fake institution); 1-32 letters, digits, ``-``, ``_``.
        Each centre has its own devices (gain, dynamic range, speckle grain, lateral resolution,
        frequency; see :func:`devices_for_centre`): an external cohort is a real domain shift.
    gist_fraction : float
        Share of GIST patients in [0, 1].
    size_matched : bool
        Both classes draw the lesion size from one distribution (only echo and texture cues remain).
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    pathlib.Path
        Path of ``manifest.csv``.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    if not 0.0 <= gist_fraction <= 1.0:
        raise ValueError(f"gist_fraction must be in [0, 1], got {gist_fraction}")
    if not _CENTRE_RE.match(centre):
        raise ValueError(f"centre must be 1-32 letters, digits, '-' or '_', got {centre!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=patients, desc="phantom", unit="patient", file=sys.stderr)
    plans = plan_cohort(patients, seed, difficulty=difficulty, centre=centre, gist_fraction=gist_fraction,
                        size_matched=size_matched)
    for p in plans:
        rows.extend(_write_patient(p, out, seed, centre))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return manifest
