"""Worker fixtures: a phantom cohort, a spool holding one of its studies, an audit log, a fake bundle.

The fake bundle stands in for ``models.bundle.Bundle`` where the test is about the worker (SR, audit,
idempotency, failure classification), not the model: it uses the real sector check of ``models`` and
returns deterministic probabilities and ROI polygons from the SEG mask.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

from audit import AuditLog
from eusdx.config import Settings, load_settings

SECRET = "worker-test-secret"


def cohort_studies(cohort: Path) -> list[str]:
    """Study UIDs of a cohort, in manifest order."""
    with open(cohort / "manifest.csv", newline="") as fh:
        uids = [row["study_uid"] for row in csv.DictReader(fh)]
    return list(dict.fromkeys(uids))


def copy_study(cohort: Path, study_uid: str, spool: Path) -> Path:
    """Put a phantom study into the spool layout ``<spool>/<study>/<sop>.dcm``."""
    target = spool / study_uid
    shutil.copytree(cohort / "studies" / study_uid, target)
    return target


def expected_frame_keys(study_dir: Path, max_frames: int) -> int:
    """How many frames the worker samples from a phantom study: every still image, and at most
    ``max_frames`` of each cine (the phantom draws the number of images and cine lengths per patient)."""
    import pydicom

    n = 0
    for path in study_dir.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.Modality == "SEG":
            continue
        n += min(int(ds.get("NumberOfFrames", 1) or 1), max_frames)
    return n


@pytest.fixture
def settings(tmp_var: Path) -> Settings:
    """Embedded-default settings rooted in a private var/."""
    return load_settings(
        spool_dir=tmp_var / "spool",
        queue_dir=tmp_var / "queue",
        database_url=f"sqlite:///{tmp_var / 'audit.db'}",
        bundle=tmp_var / "bundles" / "current",
        device="cpu",
    )


@pytest.fixture
def audit_log(settings: Settings) -> Iterator[AuditLog]:
    log = AuditLog(settings.database_url, SECRET)
    log.ensure_schema()
    try:
        yield log
    finally:
        log.close()


@dataclass
class RecordingExport:
    """Export hand-off that keeps what it was given (deduplicating by SOP Instance UID, like the outbox)."""

    folder: Path
    items: dict[str, Dataset] = field(default_factory=dict)
    calls: int = 0
    fail_next: int = 0

    def __call__(self, dataset: Dataset, study_uid: str) -> str:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("outbox disk unavailable")
        assert dataset.StudyInstanceUID == study_uid
        uid = str(dataset.SOPInstanceUID)
        if uid not in self.items:
            self.folder.mkdir(parents=True, exist_ok=True)
            dataset.save_as(self.folder / f"{uid}.dcm", enforce_file_format=True)
            self.items[uid] = dataset
        return uid


@pytest.fixture
def exporter(tmp_path: Path) -> RecordingExport:
    return RecordingExport(tmp_path / "outbox")


@dataclass(frozen=True)
class FakeImageResult:
    key: str
    probability: float
    label: str
    roi_polygon: list[tuple[float, float]]
    roi_source: str
    roi_confidence: float
    timings: dict[str, float]


class FakeBundle:
    """Deterministic stand-in for ``models.bundle.Bundle`` (same attributes and methods)."""

    version = "2026.11.26-fake0001"
    sha256 = hashlib.sha256(b"fake bundle").hexdigest()
    threshold = 0.5
    synthetic = True
    model_name = "fake-classifier (tests)"

    def __init__(self, *, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[list[str]] = []

    def has_sector(self, pixels: np.ndarray) -> bool:
        from models.preprocess import has_sector

        return bool(has_sector(pixels))

    @staticmethod
    def probability_of(key: str) -> float:
        """The probability this bundle gives a frame (what the SR must carry)."""
        digest = hashlib.sha256(key.encode()).digest()
        return round(0.05 + 0.9 * digest[0] / 255, 6)

    def predict(self, frames: list[Any], device: str = "cpu") -> list[FakeImageResult]:
        self.calls.append([f.key for f in frames])
        if self.error is not None:
            raise self.error
        out = []
        for f in frames:
            rows, cols = f.pixels.shape[:2]
            if f.seg_mask is not None:
                r, c = np.nonzero(f.seg_mask)
                r0, r1, c0, c1 = r.min(), r.max() + 1, c.min(), c.max() + 1
                source, confidence = "SEG", 1.0
            else:
                r0, r1, c0, c1 = rows // 3, 2 * rows // 3, cols // 3, 2 * cols // 3
                source, confidence = "automatic", 0.6
            polygon = [(float(c0), float(r0)), (float(c1), float(r0)), (float(c1), float(r1)), (float(c0), float(r1))]
            p = self.probability_of(f.key)
            out.append(FakeImageResult(f.key, p, self.label_for(p), polygon, source, confidence,
                                       {"preprocess": 0.01, "roi": 0.0, "radiomics": 0.02, "deep": 0.03,
                                        "classify": 0.001}))
        return out

    def lesion_probability(self, results: list[FakeImageResult]) -> float:
        return float(np.mean([r.probability for r in results]))

    def label_for(self, probability: float) -> str:
        return "GIST" if probability >= self.threshold else "leiomyoma"


@pytest.fixture
def fake_bundle() -> FakeBundle:
    return FakeBundle()
