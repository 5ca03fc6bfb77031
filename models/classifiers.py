"""Classifiers on radiomics, deep and combined features; lesion-grouped CV; late fusion.

Every model is an sklearn ``Pipeline``: impute -> drop constant columns -> standardise -> select
(LASSO or mRMR, fitted inside each CV fold) -> SVM (probability outputs) | XGBoost | random forest.
The combined (early-fusion) models do the first four steps per modality and concatenate the selected
radiomics and deep features before the classifier.
Hyper-parameters are chosen by a small grid search on ``StratifiedGroupKFold`` folds grouped by lesion
on the training split only (score: AUC of the pooled out-of-fold probabilities); the chosen
combination's out-of-fold (OOF) image probabilities are averaged per lesion. The late-fusion stacker (paper 004) is a logistic regression
on the logits of the single models' OOF lesion probabilities.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.feature_selection import SelectFromModel, VarianceThreshold, f_classif
from sklearn.feature_selection._base import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "CLASSIFIERS",
    "MRMRSelector",
    "make_pipeline",
    "param_grid",
    "fit_with_cv",
    "aggregate",
    "youden_threshold",
    "fit_stacker",
    "logit",
]

CLASSIFIERS = ("svm", "xgboost", "rf")


class MRMRSelector(SelectorMixin, BaseEstimator):
    """Minimum-redundancy maximum-relevance feature selection (difference scheme, MID).

    Relevance is the correlation ratio eta of a feature with the class (from the ANOVA F statistic;
    for two classes it equals the absolute point-biserial correlation); redundancy is the mean absolute
    Pearson correlation with the features already chosen. Greedy: first the most relevant feature,
    then repeatedly the one maximising ``relevance - redundancy`` (Ding & Peng 2005, MID).

    Parameters
    ----------
    n_features : int, default=20
        How many features to keep (all when fewer exist).

    Attributes
    ----------
    support_ : ndarray of bool, shape (n_features_in_,)
    ranking_ : ndarray of int
        Selected column indices in selection order.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 5)); y = (X[:, 2] > 0).astype(int)
    >>> MRMRSelector(n_features=1).fit(X, y).get_support().nonzero()[0].tolist()
    [2]
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "n_features": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, n_features: int = 20) -> None:
        self.n_features = n_features

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> "MRMRSelector":
        """Select features from X (n_samples, n_features) for labels y."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        n = X.shape[1]
        k = min(self.n_features, n)
        n_classes = len(np.unique(y))
        if n_classes > 1:
            f, _ = f_classif(X, y)
            f = np.nan_to_num(np.asarray(f, dtype=np.float64), nan=0.0, posinf=0.0)
            # Correlation ratio eta in [0, 1] (for two classes: |point-biserial r|), so relevance and
            # redundancy share a scale.
            df_between, df_within = n_classes - 1, max(1, X.shape[0] - n_classes)
            relevance = np.sqrt(f * df_between / (f * df_between + df_within + 1e-12))
        else:
            relevance = np.zeros(n)
        std = X.std(axis=0)
        Z = np.divide(X - X.mean(axis=0), std, out=np.zeros_like(X), where=std > 0)
        chosen = [int(np.argmax(relevance))]
        redundancy = np.zeros(n)
        while len(chosen) < k:
            last = Z[:, chosen[-1]]
            redundancy += np.abs(Z.T @ last) / max(1, X.shape[0])
            score = relevance - redundancy / len(chosen)
            score[chosen] = -np.inf
            chosen.append(int(np.argmax(score)))
        support = np.zeros(n, dtype=bool)
        support[chosen] = True
        self.support_ = support
        self.ranking_ = np.asarray(chosen)
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self)
        return self.support_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def _selector(kind: str, k: int, seed: int) -> Any:
    if kind == "mrmr":
        return MRMRSelector(n_features=k)
    if kind == "lasso":
        # L1 logistic regression; the k largest |coefficients| are kept (threshold=-inf), so the
        # selected count is fixed and comparable across folds.
        return SelectFromModel(
            LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.5, class_weight="balanced",
                               random_state=seed, max_iter=2000),
            max_features=k, threshold=-np.inf)
    if kind == "none":
        return "passthrough"
    raise ValueError(f"unknown selector {kind!r}; use lasso, mrmr or none")


def _classifier(name: str, seed: int, n_jobs: int) -> Any:
    if name == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        # Platt scaling on internal 3-fold decision values, then one SVC on all rows (what
        # SVC(probability=True) did before scikit-learn 1.9 deprecated it).
        return CalibratedClassifierCV(SVC(kernel="rbf", class_weight="balanced", random_state=seed),
                                      method="sigmoid", cv=3, ensemble=False)
    if name == "xgboost":
        from xgboost import XGBClassifier

        # One thread: on a shared 2-core machine xgboost's thread pool slows down ten-fold.
        return XGBClassifier(n_estimators=150, learning_rate=0.05, max_depth=3, subsample=0.8,
                             colsample_bytree=0.8, tree_method="hist", n_jobs=1,
                             random_state=seed, eval_metric="logloss")
    if name == "rf":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=150, class_weight="balanced", n_jobs=n_jobs,
                                      random_state=seed)
    raise ValueError(f"unknown classifier {name!r}; use one of {CLASSIFIERS}")


def _prep(selector: str, k: int, seed: int) -> list[tuple[str, Any]]:
    return [
        ("impute", SimpleImputer(strategy="median")),
        ("variance", VarianceThreshold(1e-12)),
        ("scale", StandardScaler()),
        ("select", _selector(selector, k, seed)),
    ]


def make_pipeline(classifier: str, *, selector: str = "lasso", k: int = 32, seed: int = 0,
                  n_jobs: int = 1, split_at: int | None = None) -> Pipeline:
    """Impute -> variance filter -> standardise -> select -> classify.

    With ``split_at`` (early fusion: columns ``[:split_at]`` radiomics, the rest deep) each modality
    is imputed, standardised and selected on its own (``k // 2`` features each) and the selections
    are concatenated, so the fused model always sees both modalities (a joint LASSO over 660
    radiomics and a few hundred deep columns can drop one side entirely).
    """
    if split_at is None:
        return Pipeline([*_prep(selector, k, seed), ("clf", _classifier(classifier, seed, n_jobs))])
    from sklearn.compose import ColumnTransformer

    half = max(1, k // 2)
    prep = ColumnTransformer(
        [("radiomics", Pipeline(_prep(selector, half, seed)), slice(0, split_at)),
         ("deep", Pipeline(_prep(selector, half, seed)), slice(split_at, None))],
        verbose_feature_names_out=False)
    return Pipeline([("prep", prep), ("clf", _classifier(classifier, seed, n_jobs))])


def param_grid(classifier: str, n_features: int, selector: str = "lasso",
               split_at: int | None = None) -> dict[str, list[Any]] | list[dict[str, list[Any]]]:
    """Small grids: the CPU budget allows a few combinations per model."""
    # The number of selected features is tuned for the SVM only (trees pick their own features);
    # the CPU budget allows two to four combinations per model.
    ks = sorted({min(n_features, 16), min(n_features, 32)}) if classifier == "svm" else [min(n_features, 32)]
    grid: dict[str, list[Any]] = {}
    if classifier == "svm":
        grid["clf__estimator__C"] = [0.5, 2.0]
    elif classifier == "xgboost":
        grid["clf__max_depth"] = [2, 4]
    elif classifier == "rf":
        grid["clf__min_samples_leaf"] = [1, 5]
    name = {"mrmr": "n_features", "lasso": "max_features"}.get(selector)
    if name is None:
        return grid
    if split_at is None:
        return {f"select__{name}": ks, **grid}
    return [{f"prep__radiomics__select__{name}": [max(1, k // 2)], f"prep__deep__select__{name}": [max(1, k // 2)],
             **grid} for k in ks]


def fit_with_cv(
    classifier: str,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    selector: str = "lasso",
    n_splits: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    search: bool = True,
    split_at: int | None = None,
) -> tuple[Pipeline, np.ndarray, dict[str, Any]]:
    """Grid search on lesion-grouped folds, refit on all training rows, and OOF image probabilities.

    Each parameter combination is scored by the AUC of its pooled out-of-fold probabilities
    (``StratifiedGroupKFold`` by lesion, the same folds for every combination); the winner's OOF
    probabilities are returned as they are, so no extra CV round is needed. With ``search=False`` the
    defaults (16 selected features, middle parameters) are used (fast runs: tests, smoke bundles).

    Returns
    -------
    (model fitted on all rows, oof_prob, best_params)
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import ParameterGrid

    n_groups = len(np.unique(groups))
    splits = max(2, min(n_splits, n_groups // 2))
    cv = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    folds = list(cv.split(X, y, groups))
    if not search:
        pipe = make_pipeline(classifier, selector=selector, k=min(16, X.shape[1]), seed=seed, n_jobs=n_jobs,
                             split_at=split_at)
        oof = cross_val_predict(pipe, X, y, cv=folds, method="predict_proba")[:, 1]
        return pipe.fit(X, y), oof, {}
    pipe = make_pipeline(classifier, selector=selector, k=min(32, X.shape[1]), seed=seed, n_jobs=n_jobs,
                         split_at=split_at)
    best: tuple[float, dict[str, Any], np.ndarray] | None = None
    for params in ParameterGrid(param_grid(classifier, X.shape[1], selector, split_at)):
        oof = cross_val_predict(clone(pipe).set_params(**params), X, y, cv=folds, method="predict_proba")[:, 1]
        auc = float(roc_auc_score(y, oof)) if len(np.unique(y)) > 1 else 0.0
        if best is None or auc > best[0]:
            best = (auc, params, oof)
    assert best is not None
    model = clone(pipe).set_params(**best[1]).fit(X, y)
    return model, best[2], dict(best[1])


def aggregate(prob: np.ndarray, groups: Sequence[str] | np.ndarray, how: str = "mean") -> pd.Series:
    """Image probabilities -> one probability per lesion (``mean``, ``median`` or ``max``)."""
    if how not in ("mean", "median", "max"):
        raise ValueError(f"unknown aggregation {how!r}")
    s = pd.Series(np.asarray(prob, dtype=float), index=pd.Index(np.asarray(groups), name="lesion_id"))
    return s.groupby(level=0, sort=True).agg(how)


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1, with pROC's semantics (``models.stats``).

    The evaluation report computes Youden the same way, so the bundle's threshold and the report's
    agree. A training set with one class has no ROC curve: 0.5 then.
    """
    from .stats import youden_threshold as _pROC_youden

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return 0.5
    return float(np.clip(_pROC_youden(y, prob).threshold, 0.0, 1.0))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


def fit_stacker(P: np.ndarray, y: np.ndarray, *, seed: int = 0) -> tuple[LogisticRegression, np.ndarray]:
    """Late fusion: logistic regression on logits of single-model lesion probabilities.

    Parameters
    ----------
    P : (n_lesions, n_models) OOF lesion probabilities of the single models
    y : (n_lesions,) labels

    Returns
    -------
    (stacker fitted on all rows, the stacker's own OOF probabilities)
    """
    Z = logit(P)
    lr = LogisticRegression(C=1.0, max_iter=1000)
    splits = max(2, min(5, int(np.bincount(np.asarray(y, dtype=int)).min())))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    oof = cross_val_predict(lr, Z, y, cv=cv, method="predict_proba")[:, 1]
    return lr.fit(Z, y), oof
