"""The phantom has no acquisition shortcut: header fields and pixels outside the sector do not predict the class.

A fixed default cohort of 320 lesions (seed 2026). Each check is a lesion-level model with 5-fold
cross-validation grouped by patient; its pooled out-of-fold AUC must stay <= 0.60 (with 320 lesions the
AUC of a useless model has a standard error of about 0.03). Positive controls show the same models and
folds do find a shortcut when one is there: the true lesion size (a real class cue in the default
cohort), and burned-in text whose depth follows the lesion size as the first phantom's did.
The same feature builders make the baseline rows of every evaluation report (``models/baselines.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from phantom import StudyPlan, plan_cohort
from models.baselines import cv_auc, header_features, lesion_header, outside_sector_features

N_LESIONS = 320
SEED = 2026
LIMIT = 0.60


@pytest.fixture(scope="module")
def plans() -> list[StudyPlan]:
    return plan_cohort(N_LESIONS, SEED)


@pytest.fixture(scope="module")
def y(plans: list[StudyPlan]) -> np.ndarray:
    return np.array([p.label == "GIST" for p in plans], dtype=int)


@pytest.fixture(scope="module")
def groups(plans: list[StudyPlan]) -> np.ndarray:
    return np.array([p.patient_id for p in plans])


def _header(plans: list[StudyPlan]) -> np.ndarray:
    return header_features([lesion_header(p.header_fields()) for p in plans])


def test_cohort_is_large_and_balanced(plans: list[StudyPlan], y: np.ndarray) -> None:
    assert len({p.lesion_id for p in plans}) >= 300
    assert 0.4 < y.mean() < 0.6
    # Several devices in one centre, each used for both classes.
    models = np.array([p.device.model for p in plans])
    assert len(set(models)) >= 3
    for m in set(models):
        assert 0 < y[models == m].sum() < (models == m).sum()


def test_header_fields_alone_do_not_predict_the_class(plans: list[StudyPlan], y: np.ndarray,
                                                      groups: np.ndarray) -> None:
    auc = cv_auc(_header(plans), y, groups)
    assert auc <= LIMIT, f"header-only AUC {auc:.3f}"


@pytest.mark.slow  # renders 320 full images (~0.15-0.4 s each)
def test_pixels_outside_the_sector_alone_do_not_predict_the_class(plans: list[StudyPlan], y: np.ndarray,
                                                                  groups: np.ndarray) -> None:
    X = np.stack([outside_sector_features(img.pixels, img.sector_mask) for img in (p.render_first() for p in plans)])
    auc = cv_auc(X, y, groups)
    assert auc <= LIMIT, f"outside-sector AUC {auc:.3f}"


def test_positive_control_size_is_found(plans: list[StudyPlan], y: np.ndarray, groups: np.ndarray) -> None:
    size = np.array([[p.spec.size_mm] for p in plans])
    assert cv_auc(size, y, groups) > 0.8
    assert cv_auc(np.hstack([_header(plans), size]), y, groups) > 0.8


def test_positive_control_depth_that_follows_size_is_found(plans: list[StudyPlan], y: np.ndarray,
                                                           groups: np.ndarray) -> None:
    # Burned-in text and depth scale of the first phantom, whose depth range grew with the lesion.
    from dataclasses import replace

    from phantom.image import GEOMETRY, _annotate, sector_mask

    feats = []
    for p in plans:
        need = 2.5 * p.spec.size_mm * 1.1
        depth = next((d for d in (30, 40, 50, 60, 70, 80, 90, 100, 120, 150) if d >= max(50.0, need)), 150)
        view = replace(p.stills[0], depth_mm=float(depth))
        pixels = np.zeros((GEOMETRY.rows, GEOMETRY.cols), np.uint8)
        _annotate(pixels, view, depth / GEOMETRY.depth_px, p.annotations, GEOMETRY)
        feats.append(outside_sector_features(pixels, sector_mask()))
    assert cv_auc(np.stack(feats), y, groups) > 0.75


def test_size_matched_cohort_leaves_no_size_cue() -> None:
    plans = plan_cohort(N_LESIONS, SEED, size_matched=True)
    y = np.array([p.label == "GIST" for p in plans], dtype=int)
    size = np.array([[p.spec.size_mm] for p in plans])
    assert cv_auc(size, y, np.array([p.patient_id for p in plans])) <= LIMIT
