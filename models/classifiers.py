"""Classifiers on radiomics, deep and combined features; patient-grouped CV; late fusion.

Every model is an sklearn ``Pipeline``: impute -> drop constant columns -> standardise -> select
(LASSO or mRMR, fitted inside each CV fold) -> SVM (Platt-calibrated) | XGBoost | random forest |
logistic regression. The combined (early-fusion) models do the first four steps per modality and
concatenate the selected radiomics and deep features before the classifier.

Every fold in here groups by *patient* (the ``groups`` passed in): the outer CV that gives the
out-of-fold (OOF) probabilities, the inner CV of the nested hyper-parameter search, the LASSO's
lambda search (:class:`LassoSelector`) and the SVM's Platt calibration folds (:class:`GroupedPlattSVC`).
The last two receive the groups through scikit-learn metadata routing.

Named methods:

- **LASSO** (paper 004, Tibshirani 1996; glmnet's ``cv.glmnet`` recipe): L1 logistic regression over a
  path of penalties, lambda chosen by grouped CV on the binomial deviance (``lambda.min``, or the
  largest lambda within one standard error, ``lambda.1se``); the features with non-zero coefficients
  are kept.
- **lasso-lr** (paper 004's radiomics model): LASSO selection, then a logistic regression on the kept
  features.
- **late fusion**: :func:`fit_stacker`, a logistic regression on the logits of single models' OOF lesion
  probabilities (paper 004's integrated model when its inputs are the radiomics LR and the ResNet-50).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.feature_selection import VarianceThreshold, f_classif
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
    "EXTRA_CLASSIFIERS",
    "GroupedPlattSVC",
    "LassoSelector",
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
#: Classifiers ``make_pipeline`` also builds (paper 004's logistic regression).
EXTRA_CLASSIFIERS = ("lasso-lr",)
_ROUTED = {"groups": True}
_LASSO_MEMO: dict[str, tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}


def _group_folds(y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds keeping each group on one side (plain stratified folds when ``groups`` is None)."""
    y = np.asarray(y)
    counts = np.bincount(y.astype(int), minlength=2)
    if groups is None:
        n = max(2, min(n_splits, int(counts.min())))
        return list(StratifiedKFold(n_splits=n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    groups = np.asarray(groups)
    n = max(2, min(n_splits, len(np.unique(groups)) // 2, int(counts.min())))
    return list(StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


class _SupportSelector(SelectorMixin, BaseEstimator):
    """A supervised selector whose ``fit`` sets ``support_`` (bool per input column)."""

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self)
        return self.support_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


class LassoSelector(_SupportSelector):
    """LASSO feature selection: L1 logistic regression, lambda by (patient-)grouped cross-validation.

    A path of ``n_lambdas`` penalties (C = 1/lambda, log-spaced from the smallest C that keeps one
    feature upwards) is fitted on each fold; the mean held-out binomial deviance picks lambda
    (``rule="min"``) or the largest lambda whose deviance is within one standard error of the minimum
    (``rule="1se"``), as glmnet's ``cv.glmnet`` does. The model refitted on all rows at that lambda keeps
    its features with non-zero coefficients (at least ``min_features``: the first to enter the path).

    Parameters
    ----------
    rule : {"min", "1se"}
    n_lambdas : int
    n_splits : int
        CV folds; grouped by the ``groups`` passed to :meth:`fit` (metadata routing) when given.
    max_features : int or None
        Upper bound on the kept features (largest |coef| first); None: no bound.
    min_features : int
    seed : int

    Attributes
    ----------
    support_ : ndarray of bool
    coef_ : ndarray
        Coefficients of the refitted model (standardised inputs expected).
    lambda_ : float
        Chosen lambda in glmnet's scale (1 / (C n)).
    cv_deviance_ : ndarray (n_lambdas,)
    """

    __metadata_request__fit = _ROUTED

    def __init__(self, rule: str = "min", n_lambdas: int = 8, n_splits: int = 3, max_features: int | None = None,
                 min_features: int = 1, seed: int = 0) -> None:
        self.rule = rule
        self.n_lambdas = n_lambdas
        self.n_splits = n_splits
        self.max_features = max_features
        self.min_features = min_features
        self.seed = seed

    @staticmethod
    def _l1(C: float, seed: int) -> LogisticRegression:
        return LogisticRegression(l1_ratio=1.0, solver="liblinear", C=C, random_state=seed, max_iter=300, tol=1e-3)

    def _path(self, X: np.ndarray, y: np.ndarray, groups: Any) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(lambda, CV deviance per lambda, coef at lambda, |coef| at the smallest lambda); memoised on the
        data, because a grid search refits the same fold for every classifier setting."""
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(X).tobytes() + y.tobytes())
        h.update(repr((None if groups is None else np.asarray(groups).tolist(), self.rule, self.n_lambdas,
                       self.n_splits, self.seed)).encode())
        key = h.hexdigest()
        hit = _LASSO_MEMO.get(key)
        if hit is not None:
            return hit
        from sklearn.svm import l1_min_c

        n = X.shape[0]
        # scikit-learn's C multiplies the summed loss: C = 1 / (n * lambda) in glmnet's scale. The path runs
        # from just below lambda_max (the smallest C with a non-zero coefficient) down by a factor 100.
        c0 = float(l1_min_c(X, y, loss="log")) if np.ptp(X, axis=0).any() else 1.0
        Cs = c0 * np.logspace(0.05, 2.0, self.n_lambdas)
        folds = _group_folds(y, None if groups is None else np.asarray(groups), self.n_splits, self.seed)
        dev = np.zeros((len(folds), len(Cs)))
        for i, (tr, te) in enumerate(folds):
            for j, C in enumerate(Cs):
                m = self._l1(C, self.seed).fit(X[tr], y[tr])
                q = np.clip(m.predict_proba(X[te])[:, 1], 1e-6, 1 - 1e-6)
                dev[i, j] = -2.0 * np.mean(y[te] * np.log(q) + (1 - y[te]) * np.log(1 - q))
        mean = dev.mean(axis=0)
        se = dev.std(axis=0, ddof=1) / np.sqrt(len(folds)) if len(folds) > 1 else np.zeros_like(mean)
        best = int(np.argmin(mean))
        if self.rule == "1se":
            # Largest lambda (smallest C) within one SE of the minimum.
            best = int(np.flatnonzero(mean <= mean[best] + se[best])[0])
        coef = self._l1(float(Cs[best]), self.seed).fit(X, y).coef_.ravel()
        loose = np.abs(self._l1(float(Cs[-1]), self.seed).fit(X, y).coef_.ravel())
        if len(_LASSO_MEMO) >= 512:
            _LASSO_MEMO.pop(next(iter(_LASSO_MEMO)))
        out = (1.0 / (float(Cs[best]) * n), mean, coef, loose)
        _LASSO_MEMO[key] = out
        return out

    def fit(self, X: Any, y: Any, groups: Any = None) -> "LassoSelector":
        """Choose lambda on grouped folds and keep the non-zero coefficients. X: (n, p) standardised."""
        if self.rule not in ("min", "1se"):
            raise ValueError(f"rule must be 'min' or '1se', got {self.rule!r}")
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = np.asarray(y).astype(int)
        p = X.shape[1]
        lam, mean, coef, loose = self._path(X, y, groups)
        self.cv_deviance_ = mean
        self.lambda_ = lam
        support = coef != 0
        if support.sum() < self.min_features:
            # The path's first entrants: the largest |coef| at the smallest lambda.
            support = np.zeros(p, dtype=bool)
            support[np.argsort(-loose)[: self.min_features]] = True
        if self.max_features is not None and support.sum() > self.max_features:
            order = np.argsort(-np.abs(coef))
            support = np.zeros(p, dtype=bool)
            support[order[: self.max_features]] = True
        self.coef_ = coef
        self.support_ = support
        return self



class GroupedPlattSVC(ClassifierMixin, BaseEstimator):
    """RBF SVM with Platt scaling fitted on out-of-fold decision values from patient-grouped folds.

    Platt (1999): ``P(y=1 | f) = 1 / (1 + exp(A f + B))`` fitted on decision values ``f`` the SVM did
    not train on. The folds are ``StratifiedGroupKFold`` over the ``groups`` given to :meth:`fit`
    (metadata routing), so images of one patient never calibrate a model that saw them
    (``CalibratedClassifierCV(cv=3)`` splits by row, i.e. by image). The final SVM is fitted on all rows.

    Parameters
    ----------
    C : float
    gamma : str or float
    n_splits : int
    seed : int
    """

    __metadata_request__fit = _ROUTED

    def __init__(self, C: float = 1.0, gamma: Any = "scale", n_splits: int = 3, seed: int = 0) -> None:
        self.C = C
        self.gamma = gamma
        self.n_splits = n_splits
        self.seed = seed

    def _svc(self) -> Any:
        from sklearn.svm import SVC

        return SVC(kernel="rbf", C=self.C, gamma=self.gamma, class_weight="balanced", random_state=self.seed)

    def fit(self, X: Any, y: Any, groups: Any = None) -> "GroupedPlattSVC":
        """Fit the calibration on grouped OOF decision values, then the SVM on all rows."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = np.asarray(y).astype(int)
        self.classes_ = np.unique(y)
        folds = _group_folds(y, None if groups is None else np.asarray(groups), self.n_splits, self.seed)
        f = np.zeros(len(y))
        for tr, te in folds:
            f[te] = self._svc().fit(X[tr], y[tr]).decision_function(X[te])
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(f[:, None], y)
        self.platt_a_ = float(platt.coef_[0, 0])
        self.platt_b_ = float(platt.intercept_[0])
        self.svc_ = self._svc().fit(X, y)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return np.asarray(self.svc_.decision_function(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) calibrated probabilities; column 1 is P(GIST)."""
        z = self.platt_a_ * self.decision_function(X) + self.platt_b_
        p1 = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


class MRMRSelector(_SupportSelector):
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



def _selector(kind: str, k: int, seed: int) -> Any:
    if kind == "mrmr":
        return MRMRSelector(n_features=k)
    if kind in ("lasso", "lasso-1se"):
        # LASSO with lambda by grouped CV; the non-zero coefficients are kept (at most k).
        return LassoSelector(rule="1se" if kind == "lasso-1se" else "min", max_features=k, seed=seed)
    if kind == "none":
        return "passthrough"
    raise ValueError(f"unknown selector {kind!r}; use lasso, lasso-1se, mrmr or none")


def _classifier(name: str, seed: int, n_jobs: int) -> Any:
    if name == "svm":
        # Platt scaling on patient-grouped 3-fold decision values, then one SVC on all rows.
        return GroupedPlattSVC(seed=seed)
    if name == "lasso-lr":
        # Paper 004: a logistic regression on the LASSO-selected features.
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
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
    raise ValueError(f"unknown classifier {name!r}; use one of {CLASSIFIERS + EXTRA_CLASSIFIERS}")


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
        grid["clf__C"] = [0.5, 2.0]
    elif classifier == "xgboost":
        grid["clf__max_depth"] = [2, 4]
    elif classifier == "rf":
        grid["clf__min_samples_leaf"] = [1, 5]
    elif classifier == "lasso-lr":
        return grid  # LASSO picks its own lambda by grouped CV: nothing to search
    name = {"mrmr": "n_features", "lasso": "max_features", "lasso-1se": "max_features"}.get(selector)
    if name is None:
        return grid
    if split_at is None:
        return {f"select__{name}": ks, **grid}
    return [{f"prep__radiomics__select__{name}": [max(1, k // 2)], f"prep__deep__select__{name}": [max(1, k // 2)],
             **grid} for k in ks]


def _uses_groups(est: Any) -> bool:
    """Does any step of ``est`` (pipelines, column transformers) take ``groups`` at fit time?"""
    if isinstance(est, (LassoSelector, GroupedPlattSVC)):
        return True
    if isinstance(est, Pipeline):
        return any(_uses_groups(step) for _, step in est.steps)
    transformers = getattr(est, "transformers", None)
    if transformers is not None:
        return any(_uses_groups(t) for _, t, _ in transformers)
    return False


def _routed_fit(est: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Any:
    from sklearn import config_context

    if not _uses_groups(est):
        return est.fit(X, y)
    with config_context(enable_metadata_routing=True):
        return est.fit(X, y, groups=groups)


def _routed_oof(est: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold P(class 1) over ``folds``; each fold's fit receives its own rows' groups."""
    oof = np.zeros(len(y))
    for tr, te in folds:
        m = _routed_fit(clone(est), X[tr], y[tr], groups[tr])
        oof[te] = m.predict_proba(X[te])[:, 1]
    return oof


def _search(pipe: Any, grid: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
            folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, Any], np.ndarray]:
    """Best parameter combination by the AUC of its pooled OOF probabilities on ``folds``."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import ParameterGrid

    best: tuple[float, dict[str, Any], np.ndarray] | None = None
    for params in ParameterGrid(grid):
        oof = _routed_oof(clone(pipe).set_params(**params), X, y, groups, folds)
        auc = float(roc_auc_score(y, oof)) if len(np.unique(y)) > 1 else 0.0
        if best is None or auc > best[0] + 1e-12:
            best = (auc, dict(params), oof)
    assert best is not None
    return best[1], best[2]


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
    inner_splits: int = 3,
) -> tuple[Pipeline, np.ndarray, dict[str, Any]]:
    """Out-of-fold probabilities and a final model, with a nested, patient-grouped hyper-parameter search.

    ``groups`` are patient ids: every split keeps a patient's rows on one side. With ``search=True``
    each outer fold runs its own grid search on inner folds of its training part (nested CV: the OOF
    probability of a row never comes from parameters chosen with that row) and the final model's
    parameters come from the same search on all rows. With ``search=False`` the defaults (16 selected
    features at most, middle parameters) are used (fast runs: tests, smoke bundles). The LASSO selector
    and the SVM's Platt scaling receive the groups of their fold.

    Returns
    -------
    (model fitted on all rows, oof_prob (n,), best_params of the final model)
    """
    X = np.asarray(X)
    y = np.asarray(y)
    groups = np.asarray(groups)
    folds = _group_folds(y, groups, n_splits, seed)
    if not search:
        pipe = make_pipeline(classifier, selector=selector, k=min(16, X.shape[1]), seed=seed, n_jobs=n_jobs,
                             split_at=split_at)
        oof = _routed_oof(pipe, X, y, groups, folds)
        return _routed_fit(clone(pipe), X, y, groups), oof, {}
    pipe = make_pipeline(classifier, selector=selector, k=min(32, X.shape[1]), seed=seed, n_jobs=n_jobs,
                         split_at=split_at)
    grid = param_grid(classifier, X.shape[1], selector, split_at)
    oof = np.zeros(len(y))
    for tr, te in folds:
        inner = _group_folds(y[tr], groups[tr], inner_splits, seed + 1)
        params, _ = _search(pipe, grid, X[tr], y[tr], groups[tr], inner)
        m = _routed_fit(clone(pipe).set_params(**params), X[tr], y[tr], groups[tr])
        oof[te] = m.predict_proba(X[te])[:, 1]
    params, _ = _search(pipe, grid, X, y, groups, _group_folds(y, groups, inner_splits, seed + 1))
    model = _routed_fit(clone(pipe).set_params(**params), X, y, groups)
    return model, oof, dict(params)


def aggregate(prob: np.ndarray, groups: Sequence[str] | np.ndarray, how: str = "mean") -> pd.Series:
    """Image probabilities -> one probability per lesion (``mean``, ``median`` or ``max``)."""
    if how not in ("mean", "median", "max"):
        raise ValueError(f"unknown aggregation {how!r}")
    s = pd.Series(np.asarray(prob, dtype=float), index=pd.Index(np.asarray(groups), name="lesion_id"))
    return s.groupby(level=0, sort=True).agg(how)


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1, with pROC's semantics (``stats``).

    The evaluation report computes Youden the same way, so the bundle's threshold and the report's
    agree. A training set with one class has no ROC curve: 0.5 then.
    """
    from stats import youden_threshold as _pROC_youden

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return 0.5
    return float(np.clip(_pROC_youden(y, prob).threshold, 0.0, 1.0))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


def fit_stacker(P: np.ndarray, y: np.ndarray, *, seed: int = 0,
                groups: np.ndarray | None = None) -> tuple[LogisticRegression, np.ndarray]:
    """Late fusion: logistic regression on logits of single-model lesion probabilities.

    Parameters
    ----------
    P : (n_lesions, n_models) OOF lesion probabilities of the single models
    y : (n_lesions,) labels
    groups : (n_lesions,) patient ids, optional
        The stacker's own OOF folds keep a patient's lesions together.

    Returns
    -------
    (stacker fitted on all rows, the stacker's own OOF probabilities)
    """
    Z = logit(P)
    y = np.asarray(y)
    lr = LogisticRegression(C=1.0, max_iter=1000)
    folds = _group_folds(y, None if groups is None else np.asarray(groups), 5, seed)
    oof = cross_val_predict(lr, Z, y, cv=folds, method="predict_proba")[:, 1]
    return lr.fit(Z, y), oof
