"""Training manifests and the patient-level split.

A manifest is a CSV with one row per image (or per frame of a multi-frame DICOM):

``image_path`` (DICOM or PNG/JPEG, relative to the manifest's folder or absolute), ``label``
(``GIST`` | ``leiomyoma``; ``LM`` and ``1``/``0`` are accepted), ``patient_id``, ``lesion_id``, and
optionally ``frame`` (0-based, default 0), ``seg_path`` (DICOM SEG or PNG mask), ``sop_uid`` (source
SOPInstanceUID for SEG look-up), ``centre`` (default ``internal``; any other value is an external
validation centre). Extra columns are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eusdx.errors import DataError

__all__ = ["REQUIRED_COLUMNS", "LABELS", "load_manifest", "split_by_patient", "split_by_lesion", "Split", "make_split",
           "fingerprint"]

REQUIRED_COLUMNS = ("image_path", "label", "patient_id", "lesion_id")
LABELS = ("leiomyoma", "GIST")  # index = y

_LABEL_MAP = {"gist": "GIST", "1": "GIST", "leiomyoma": "leiomyoma", "lm": "leiomyoma", "0": "leiomyoma"}


def load_manifest(path: str | Path, *, centre: str | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Parameters
    ----------
    path : path
        The CSV file.
    centre : str, optional
        Force every row's centre (used for ``--external``).

    Returns
    -------
    pandas.DataFrame
        With added columns ``image_abs``, ``seg_abs`` (or None), ``frame`` (int), ``y`` (1 = GIST),
        ``centre`` and ``row_id`` (``<lesion>|<image>#<frame>``).

    Raises
    ------
    DataError
        Missing columns, unknown labels, a lesion with two labels or two patients, missing files.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"manifest not found: {p}")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {p} is not a readable CSV: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"manifest {p.name} lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"manifest {p.name} has no rows")
    base = p.parent.resolve()

    def _abs(v: str) -> str:
        q = Path(v)
        return str(q if q.is_absolute() else (base / q).resolve())

    labels = df["label"].str.strip().str.lower().map(_LABEL_MAP)
    bad = df.loc[labels.isna(), "label"].unique().tolist()
    if bad:
        raise DataError(f"manifest {p.name}: unknown label(s) {bad[:5]}; expected GIST or leiomyoma")
    df["label"] = labels
    df["y"] = (labels == "GIST").astype(int)
    df["frame"] = pd.to_numeric(df["frame"], errors="coerce").fillna(0).astype(int) if "frame" in df else 0
    df["image_abs"] = df["image_path"].map(_abs)
    if "seg_path" in df:
        df["seg_abs"] = [(_abs(v) if v.strip() else None) for v in df["seg_path"]]
    else:
        df["seg_abs"] = None
    if "sop_uid" not in df:
        df["sop_uid"] = ""
    if centre is not None:
        df["centre"] = centre
    elif "centre" not in df:
        df["centre"] = "internal"
    else:
        df["centre"] = df["centre"].replace("", "internal")
    for col in ("patient_id", "lesion_id"):
        if (df[col].str.strip() == "").any():
            raise DataError(f"manifest {p.name}: empty {col} in some rows")
    per_lesion = df.groupby("lesion_id").agg(n_label=("y", "nunique"), n_patient=("patient_id", "nunique"))
    conflict = per_lesion.index[(per_lesion.n_label > 1) | (per_lesion.n_patient > 1)].tolist()
    if conflict:
        raise DataError(f"manifest {p.name}: lesion(s) {conflict[:5]} have several labels or patients")
    absent = [v for v in df["image_abs"].unique() if not Path(v).is_file()]
    if absent:
        raise DataError(f"manifest {p.name}: {len(absent)} image file(s) missing, e.g. {absent[0]}")
    df["row_id"] = df["lesion_id"] + "|" + df["image_path"] + "#" + df["frame"].astype(str)
    if df["row_id"].duplicated().any():
        raise DataError(f"manifest {p.name}: duplicate image/frame rows")
    return df.reset_index(drop=True)


def split_by_patient(df: pd.DataFrame, *, test_size: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 8:2 split by patient, stratified by the patient's label (GIST if any lesion is a GIST).

    Every image, frame and lesion of a patient lands on the same side (TRIPOD+AI: partition at patient
    level), so every lesion does too.

    Returns
    -------
    (train_index, test_index) : arrays of row positions in ``df``

    Raises
    ------
    DataError
        When a class has fewer than two patients (nothing to put on both sides).
    """
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    patients = df.groupby("patient_id")["y"].max()
    test_patients: set[str] = set()
    for y in (0, 1):
        ids = np.array(sorted(patients.index[patients == y]))
        if len(ids) < 2:
            raise DataError(f"need at least 2 patients of class {LABELS[y]} to split, found {len(ids)}")
        rng.shuffle(ids)
        n_test = min(len(ids) - 1, max(1, int(round(len(ids) * test_size))))
        test_patients.update(ids[:n_test].tolist())
    is_test = df["patient_id"].isin(test_patients).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


#: Former name; the split has always kept lesions together and now keeps patients together.
split_by_lesion = split_by_patient


@dataclass(frozen=True)
class Split:
    """Row frames of the three sets (external may be empty)."""

    train: pd.DataFrame
    test: pd.DataFrame
    external: pd.DataFrame


def make_split(df: pd.DataFrame, *, external: pd.DataFrame | None = None, test_size: float = 0.2,
               seed: int = 0) -> Split:
    """Split a manifest: internal rows 8:2 by patient; rows of other centres (and ``external``) aside.

    Raises
    ------
    DataError
        When a lesion of the manifest has rows of the internal and of another centre.
    """
    internal = df[df["centre"] == "internal"].reset_index(drop=True)
    other = df[df["centre"] != "internal"]
    if internal.empty:
        centres = sorted(set(df["centre"]))[:3]
        raise DataError(f"the manifest has no internal rows to train on (centre {', '.join(centres)}); "
                        "training rows need centre 'internal' or an empty centre")
    # Within one manifest a lesion id names one lesion; a separate --external manifest has its own
    # id space (a phantom made with another seed may reuse ids), so only the former is checked.
    overlap = set(other["lesion_id"]) & set(internal["lesion_id"])
    if overlap:
        raise DataError(f"lesion(s) {sorted(overlap)[:5]} appear in both internal and external rows")
    ext_parts = [other] + ([external] if external is not None else [])
    ext = pd.concat(ext_parts, ignore_index=True)
    tr, te = split_by_patient(internal, test_size=test_size, seed=seed)
    return Split(internal.iloc[tr].reset_index(drop=True), internal.iloc[te].reset_index(drop=True), ext)


def fingerprint(df: pd.DataFrame, file_hashes: dict[str, str]) -> str:
    """SHA-256 over the sorted (image hash, frame, lesion, label) rows: what the model was trained on."""
    h = hashlib.sha256()
    rows = sorted(
        f"{file_hashes.get(a, a)}#{f}|{lid}|{y}"
        for a, f, lid, y in zip(df["image_abs"], df["frame"], df["lesion_id"], df["y"])
    )
    for r in rows:
        h.update(r.encode())
        h.update(b"\n")
    return h.hexdigest()
