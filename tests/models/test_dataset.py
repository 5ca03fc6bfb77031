"""Manifest loading and the lesion-level split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eusdx.errors import DataError
from models.dataset import load_manifest, make_split, split_by_lesion, split_by_patient
from models.dicom_io import read_frame


def _write(tmp: Path, n_lesions: int = 20, per_lesion: int = 3, centre: str = "internal") -> Path:
    rows = []
    img = np.zeros((8, 8), np.uint8)
    for i in range(n_lesions):
        for k in range(per_lesion):
            name = f"L{i:03d}_{k}.png"
            Image.fromarray(img + i).save(tmp / name)
            rows.append({"image_path": name, "label": "GIST" if i % 2 else "leiomyoma",
                         "patient_id": f"P{i:03d}", "lesion_id": f"L{i:03d}", "centre": centre})
    path = tmp / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_png_manifest_loads(tmp_path: Path) -> None:
    df = load_manifest(_write(tmp_path))
    assert len(df) == 60 and set(df["y"]) == {0, 1}
    assert (df["frame"] == 0).all()
    assert read_frame(df["image_abs"][0]).shape == (8, 8)


@pytest.mark.parametrize("seed", range(5))
def test_split_never_puts_a_lesion_on_both_sides(tmp_path: Path, seed: int) -> None:
    df = load_manifest(_write(tmp_path, n_lesions=30))
    tr, te = split_by_lesion(df, test_size=0.2, seed=seed)
    assert not set(df["lesion_id"].iloc[tr]) & set(df["lesion_id"].iloc[te])
    assert len(tr) + len(te) == len(df)
    te_lesions = df.iloc[te].groupby("lesion_id")["y"].first()
    assert te_lesions.sum() == 3 and (1 - te_lesions).sum() == 3  # 20 % of 15 per class


@pytest.mark.parametrize("seed", range(3))
def test_split_never_puts_a_patient_on_both_sides(tmp_path: Path, seed: int) -> None:
    df = load_manifest(_write(tmp_path, n_lesions=30))
    # Two lesions per patient: lesions i and i + 2 (same class, as labels alternate).
    df["patient_id"] = [f"P{int(lid[1:]) % 2}{int(lid[1:]) // 4:03d}" for lid in df["lesion_id"]]
    assert (df.groupby("patient_id")["y"].nunique() == 1).all() and df["patient_id"].nunique() < df["lesion_id"].nunique()
    tr, te = split_by_patient(df, test_size=0.2, seed=seed)
    assert not set(df["patient_id"].iloc[tr]) & set(df["patient_id"].iloc[te])
    assert len(tr) + len(te) == len(df)


def test_split_is_seeded(tmp_path: Path) -> None:
    df = load_manifest(_write(tmp_path, n_lesions=30))
    a = split_by_lesion(df, seed=1)[1]
    assert np.array_equal(a, split_by_lesion(df, seed=1)[1])
    assert not np.array_equal(a, split_by_lesion(df, seed=2)[1])


def test_external_rows_are_set_aside(tmp_path: Path) -> None:
    df = load_manifest(_write(tmp_path))
    df.loc[df["lesion_id"].isin(["L000", "L001"]), "centre"] = "other"
    split = make_split(df, seed=0)
    assert set(split.external["lesion_id"]) == {"L000", "L001"}
    assert not {"L000", "L001"} & (set(split.train["lesion_id"]) | set(split.test["lesion_id"]))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns="lesion_id"), "lacks column"),
        (lambda d: d.assign(label="tumour"), "unknown label"),
        (lambda d: d.assign(label=["GIST"] + ["leiomyoma"] * (len(d) - 1)), "several labels"),
        (lambda d: d.assign(image_path="missing.png"), "missing"),
    ],
)
def test_bad_manifests_are_refused(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, n_lesions=4)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        load_manifest(path)


def test_one_class_cannot_be_split(tmp_path: Path) -> None:
    path = _write(tmp_path, n_lesions=6)
    pd.read_csv(path).assign(label="GIST").to_csv(path, index=False)
    with pytest.raises(DataError, match="at least 2 patients"):
        split_by_lesion(load_manifest(path))
