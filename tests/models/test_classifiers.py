"""Selectors, grouped CV, aggregation, thresholds, stacking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from models.classifiers import (
    MRMRSelector,
    aggregate,
    fit_stacker,
    fit_with_cv,
    logit,
    make_pipeline,
    youden_threshold,
)


@parametrize_with_checks([MRMRSelector(n_features=2)])
def test_mrmr_follows_the_sklearn_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def test_mrmr_prefers_relevant_and_non_redundant_features() -> None:
    rng = np.random.default_rng(0)
    n = 400
    signal = rng.normal(size=n)
    y = (signal + 0.5 * rng.normal(size=n) > 0).astype(int)
    other = rng.normal(size=n)
    y2 = (other > 0).astype(int)
    X = np.column_stack([
        signal,                                  # 0: relevant
        signal + 0.01 * rng.normal(size=n),      # 1: a near copy of 0 (redundant)
        rng.normal(size=n),                      # 2: noise
        other + 0.3 * y + 0.0 * y2,              # 3: weakly relevant, independent of 0
    ])
    sel = MRMRSelector(n_features=2).fit(X, y)
    assert sel.ranking_[0] in (0, 1)
    assert sel.ranking_[1] == 3  # the copy is redundant, the independent weak feature wins
    with pytest.raises(ValueError, match="n_features"):
        MRMRSelector(n_features=0).fit(X, y)


def test_youden_threshold_reference() -> None:
    # Perfect separation between 0.4 and 0.6: pROC's candidate there is the midpoint 0.5.
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
    assert youden_threshold(y, p) == pytest.approx(0.5)
    assert youden_threshold(np.ones(4), np.linspace(0, 1, 4)) == 0.5


def test_aggregate_by_lesion() -> None:
    s = aggregate(np.array([0.2, 0.4, 0.9, 0.7, 0.5]), ["b", "b", "a", "a", "c"])
    assert s.to_dict() == pytest.approx({"a": 0.8, "b": 0.3, "c": 0.5})
    assert aggregate(np.array([0.2, 0.4]), ["x", "x"], "max")["x"] == 0.4
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(np.array([0.1]), ["x"], "mode")


@pytest.mark.parametrize("clf", ["svm", "xgboost", "rf"])
def test_grouped_cv_gives_out_of_fold_probabilities(clf: str) -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 3)
    y = np.repeat(np.arange(40) % 2, 3)
    X = rng.normal(size=(120, 20))
    X[:, 0] += 1.5 * y
    model, oof, _ = fit_with_cv(clf, X, y, groups, search=False, n_splits=4)
    assert oof.shape == (120,) and np.all((oof >= 0) & (oof <= 1))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, oof) > 0.75
    proba = model.predict_proba(X)
    assert proba.shape == (120, 2) and np.allclose(proba.sum(axis=1), 1)


def test_stacker_and_logit() -> None:
    rng = np.random.default_rng(2)
    y = np.arange(60) % 2
    P = np.clip(np.column_stack([0.5 + 0.3 * (y - 0.5) + 0.1 * rng.normal(size=60),
                                 rng.uniform(size=60)]), 0, 1)
    model, oof = fit_stacker(P, y)
    assert oof.shape == (60,)
    assert model.coef_[0, 0] > abs(model.coef_[0, 1])
    assert logit(np.array([0.5]))[0] == 0.0
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown classifier"):
        make_pipeline("knn")
    with pytest.raises(ValueError, match="unknown selector"):
        make_pipeline("svm", selector="boruta")


def test_early_fusion_selects_from_both_modalities() -> None:
    from models._evaluation import _selected

    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(40), 3)
    y = np.repeat(np.arange(40) % 2, 3)
    X = rng.normal(size=(120, 60))
    X[:, :40] += 2.0 * y[:, None]  # every "radiomics" column is strongly relevant, "deep" ones weakly
    X[:, 50] += 0.8 * y
    names = [f"rad{i}" for i in range(40)] + [f"deep{i}" for i in range(20)]
    model, _, _ = fit_with_cv("svm", X, y, groups, split_at=40, n_splits=3, search=False)
    _, cols = _selected(model, X, names)
    n_half = 8  # search=False: at most 16 features, half per modality
    assert 1 <= sum(c.startswith("rad") for c in cols) <= n_half
    assert 1 <= sum(c.startswith("deep") for c in cols) <= n_half
    assert "deep10" in cols  # deep10 is column 50, the one relevant deep column


def _informative(n_groups: int = 60, per: int = 2, p: int = 30, seed: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per)
    y = np.repeat(np.arange(n_groups) % 2, per)
    X = rng.normal(size=(n_groups * per, p))
    X[:, :3] += 1.2 * (y[:, None] - 0.5)
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(X), y, groups


def test_lasso_keeps_the_nonzero_coefficients_at_the_cv_lambda() -> None:
    from models.classifiers import LassoSelector

    X, y, groups = _informative()
    sel = LassoSelector(seed=0).fit(X, y, groups=groups)
    kept = np.flatnonzero(sel.get_support())
    assert {0, 1, 2} <= set(kept)
    assert np.all(sel.coef_[kept] != 0) and np.all(sel.coef_[~sel.get_support()] == 0)
    assert len(kept) < 20
    one_se = LassoSelector(rule="1se", seed=0).fit(X, y, groups=groups)
    assert one_se.lambda_ > sel.lambda_ and one_se.get_support().sum() <= 8
    assert {0, 1, 2} <= set(np.flatnonzero(one_se.get_support()))
    assert LassoSelector(max_features=2, seed=0).fit(X, y, groups=groups).get_support().sum() == 2
    with pytest.raises(ValueError, match="rule"):
        LassoSelector(rule="aic").fit(X, y)


@pytest.mark.parametrize("clf", ["svm", "lasso-lr"])
def test_groups_reach_lasso_and_platt_folds_through_the_pipeline(clf: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import models.classifiers as C

    seen: list[tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = []
    real = C._group_folds

    def spy(y, groups, n_splits, seed):  # type: ignore[no-untyped-def]
        folds = real(y, groups, n_splits, seed)
        seen.append((groups, folds))
        return folds

    monkeypatch.setattr(C, "_group_folds", spy)
    X, y, groups = _informative(n_groups=40, per=3, p=12)
    fit_with_cv(clf, X, y, groups.astype(str), search=True, n_splits=3)
    assert len(seen) > 4
    for g, folds in seen:
        assert g is not None, "a fold split was made without the patient groups"
        for tr, te in folds:
            assert not set(g[tr]) & set(g[te])


def test_grouped_platt_svc_probabilities() -> None:
    from models.classifiers import GroupedPlattSVC

    X, y, groups = _informative()
    m = GroupedPlattSVC(seed=0).fit(X, y, groups=groups)
    p = m.predict_proba(X)
    assert p.shape == (len(y), 2) and np.allclose(p.sum(1), 1)
    assert m.platt_a_ > 0  # larger decision value, larger P(GIST)
    assert set(m.predict(X)) <= {0, 1}
