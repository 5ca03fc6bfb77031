"""Radiomics settings before and after issue 16 on the phantom: grey levels, constant features, AUCs.

SYNTHETIC DATA ONLY: every number this prints is about the phantom and the software, never a clinical result.

Issue 16 (commit e7b19cf) changed the pyradiomics settings per IBSI: the old ones
(``tests/data/radiomics_before_issue16.yaml``: raw 8-bit grey levels, raw 2D LoG, one fixed bin width of 8)
became ``models/radiomics.yaml`` (per-image sector z-score, a fixed bin count of 32 per image type,
sigma^2-normalised LoG). This script measures what that did, with the training code's own steps:

1. Data: an internal phantom cohort and an external-centre cohort (``phantom.generate_cohort``; a centre
   other than ``internal`` has devices with another gain, dynamic range and speckle: a domain shift), or
   existing manifests (``--cohort``/``--external``); ``--size-matched`` phantoms draw both classes' lesion sizes
   from one distribution, so size (and the shape features) no longer separate them. Rows as
   ``models.training.train`` stage 1 builds them: ``load_manifest``, at most ``--max-frames`` frames per
   multi-frame image, ``make_split`` (internal 8:2 by patient, external aside), lesion and patient keys
   prefixed with the split.
2. For each settings file: ``models._prepare.prepare`` (sector crop, SEG ROI, radiomics; cached under
   ``--cache``), and training's stability filter (a no-op unless the settings have a ``stability`` section).
3. Grey levels: for every image and image type (original, wavelet-XX, log-sigma-S-mm-2D), the number of
   distinct discretised grey levels inside the ROI, taken from exactly the (normalised, cropped, filtered)
   image, mask and per-image-type settings that pyradiomics hands its feature classes: a
   ``RadiomicsExtractor`` whose pyradiomics ``computeFeatures`` is replaced by
   ``radiomics.imageoperations.binImage`` + ``numpy.unique`` (what ``RadiomicsFeaturesBase._applyBinning``
   does). A feature's count is its image type's; its "median grey levels" is the median over the training
   images. Shape features do not use grey levels and are never counted. All non-shape features of an
   image type are counted (as the earlier review did), although among first-order features only Entropy
   and Uniformity use the discretised image; the JSON output also gives the discretisation-dependent count.
4. Constant features: zero range over the training images.
5. Radiomics-only classifiers as training fits them: ``fit_with_cv`` (svm, xgboost, rf; LASSO selector,
   5 patient-grouped folds, nested grid search unless ``--no-search``) on the internal train split,
   image probabilities averaged per lesion (``aggregate``), AUC with DeLong 95 % CI (``stats.roc_auc_ci``)
   on the internal test split and the external cohort; paired DeLong (``stats.delong_paired``) of new
   minus old on the same lesions.

Prints one table and the feature names whose status changed (grouped by image type and class); writes
everything as JSON to ``--out``.

Usage::

    PYTHONPATH=. python scripts/radiomics_settings_compare.py --patients 80 --external-patients 40 \\
        --cache /tmp/radshift/cache --work /tmp/radshift --out /tmp/radshift/compare.json

Reuses ``--work``'s phantom cohorts when their manifests exist (same patients/seed are not checked:
delete the folder to regenerate). ``if __name__ == "__main__"`` guards the run (spawned worker processes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OLD_SETTINGS = ROOT / "tests" / "data" / "radiomics_before_issue16.yaml"
NEW_SETTINGS = ROOT / "models" / "radiomics.yaml"
CLASSIFIERS = ("svm", "xgboost", "rf")
GL_SUFFIX = "_eusdxgreylevels_count"
#: first-order features that use the discretised image (pyradiomics firstorder.py); the others use raw values
FIRSTORDER_BINNED = ("Entropy", "Uniformity")


def image_type_of(feature: str) -> str:
    """Image type of a feature name ``<image type>_<class>_<feature>`` (``original``, ``wavelet-LH``, ...)."""
    return feature.split("_", 1)[0]


def feature_class_of(feature: str) -> str:
    """Feature class of a feature name (``shape2D``, ``firstorder``, ``glcm``, ...)."""
    parts = feature.split("_")
    return parts[1] if len(parts) > 2 else ""


def uses_discretisation(feature: str) -> bool:
    """Whether pyradiomics computes the feature from the discretised image (texture, 2 first-order)."""
    cls = feature_class_of(feature)
    if cls.startswith("shape"):
        return False
    if cls == "firstorder":
        return feature.rsplit("_", 1)[-1] in FIRSTORDER_BINNED
    return True


def _count_levels(self: Any, image: Any, mask: Any, imageTypeName: str, **kwargs: Any) -> dict[str, float]:
    """Replacement for pyradiomics' ``computeFeatures``: distinct discretised grey levels in the ROI."""
    import SimpleITK as sitk
    from radiomics import imageoperations

    arr = sitk.GetArrayFromImage(image)
    roi = sitk.GetArrayFromImage(mask) == kwargs.get("label", 1)
    binned, _ = imageoperations.binImage(arr, roi, **kwargs)
    return {f"{imageTypeName}{GL_SUFFIX}": float(len(np.unique(binned[roi])))}


def grey_level_counter(settings: dict[str, Any]) -> Any:
    """A ``RadiomicsExtractor`` whose ``extract`` returns ``{image type: grey levels in the ROI}``.

    Normalisation, cropping, LoG responses, pyradiomics' pre-crop, wavelet filters and per-image-type
    settings are the real extractor's; only the feature computation is replaced by the count (binning as
    ``radiomics.imageoperations.binImage``: ``binCount`` when set, else ``binWidth``). No cache.
    """
    from models.radiomics_features import FeatureCache, RadiomicsExtractor

    params = dict(settings)
    params["featureClass"] = {"firstorder": []}  # no shape pass; classes are not computed anyway
    params.pop("stability", None)

    class _Counter(RadiomicsExtractor):
        def _get(self, log: bool = False) -> Any:
            ex = super()._get(log)
            ex.computeFeatures = types.MethodType(_count_levels, ex)
            return ex

        def levels(self, image: np.ndarray, mask: np.ndarray, spacing: float = 1.0) -> dict[str, int]:
            raw = self.extract(image, mask, spacing)
            return {k[: -len(GL_SUFFIX)]: int(v) for k, v in raw.items() if k.endswith(GL_SUFFIX)}

    return _Counter(params, FeatureCache(None))


def _levels_chunk(settings: dict[str, Any], items: list[tuple[np.ndarray, np.ndarray, float]]) -> list[dict[str, int]]:
    import logging

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    counter = grey_level_counter(settings)
    return [counter.levels(img, m, sp) for img, m, sp in items]


def grey_levels(samples: list[Any], settings: dict[str, Any], jobs: int) -> list[dict[str, int]]:
    """Per sample: image type -> grey levels in the ROI (``jobs`` processes)."""
    from joblib import Parallel, delayed

    items = [(s.image, s.mask, s.mm_per_pixel or 1.0) for s in samples]
    n = max(1, jobs)
    chunks = [items[i::n] for i in range(n)]
    res = Parallel(n_jobs=n)(delayed(_levels_chunk)(settings, c) for c in chunks) if n > 1 else \
        [_levels_chunk(settings, chunks[0])]
    out: list[dict[str, int]] = [{}] * len(items)
    for k, part in enumerate(res):
        for j, r in enumerate(part):
            out[k + j * n] = r
    return out


def load_rows(manifest: Path, external: Path, max_frames: int | None, test_size: float, seed: int) -> pd.DataFrame:
    """The rows ``models.training.train`` stage 1 builds (split, lesion_key, patient_key)."""
    from models.dataset import load_manifest, make_split
    from models.training import _subsample_frames

    df = _subsample_frames(load_manifest(manifest), max_frames)
    ext = _subsample_frames(load_manifest(external, centre="external"), max_frames)
    split = make_split(df, external=ext, test_size=test_size, seed=seed)
    data = pd.concat([split.train.assign(split="train"), split.test.assign(split="test"),
                      split.external.assign(split="external")], ignore_index=True)
    data["lesion_key"] = data["split"] + ":" + data["lesion_id"]
    data["patient_key"] = data["split"] + ":" + data["patient_id"]
    return data


def run_settings(label: str, settings_path: Path, data: pd.DataFrame, cache: Path, args: argparse.Namespace,
                 log: Any) -> dict[str, Any]:
    """Prepare, count grey levels, fit and evaluate the radiomics-only models for one settings file."""
    import yaml

    import stats
    from models._prepare import prepare
    from models._stability import stability_filter
    from models.classifiers import aggregate, fit_with_cv
    from models.preprocess import PreprocessConfig
    from models.roi import RoiConfig

    settings = yaml.safe_load(settings_path.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    samples_or_none, failures, _ = prepare(data, pre_cfg=PreprocessConfig(), roi_cfg=RoiConfig(),
                                           radiomics_settings=settings, cache_dir=cache, jobs=args.jobs,
                                           progress=False, desc=label)
    keep = [i for i, s in enumerate(samples_or_none) if s is not None]
    d = data.iloc[keep].reset_index(drop=True)
    samples = [s for s in samples_or_none if s is not None]
    tr = (d["split"] == "train").to_numpy()
    names = list(samples[0].radiomics)
    names, _stab = stability_filter(samples, np.flatnonzero(tr), names, settings, cache, args.seed)
    X = np.array([[s.radiomics.get(n, np.nan) for n in names] for s in samples], dtype=np.float64)
    t_prep = time.perf_counter() - t0
    log(f"[{label}] {len(samples)} images ({len(failures)} failed), {len(names)} features, prepare {t_prep:.0f} s")

    t0 = time.perf_counter()
    train_samples = [s for s, t in zip(samples, tr) if t]
    levels = grey_levels(train_samples, settings, args.jobs)
    types_ = sorted({k for lv in levels for k in lv})
    median_levels = {t: float(np.median([lv[t] for lv in levels if t in lv])) for t in types_}
    feat_levels = {n: median_levels.get(image_type_of(n)) for n in names
                   if not feature_class_of(n).startswith("shape")}
    low = sorted(n for n, v in feat_levels.items() if v is not None and v <= 2)
    constant = sorted(n for n, c in zip(names, np.ptp(X[tr], axis=0)) if not np.isfinite(c) or c == 0)
    log(f"[{label}] grey levels {time.perf_counter() - t0:.0f} s: median per image type {median_levels}")

    t0 = time.perf_counter()
    y = d["y"].to_numpy()
    patients = d["patient_key"].to_numpy()
    groups = d["lesion_key"].to_numpy()
    lesion_y = d.groupby("lesion_key")["y"].first()
    aucs: dict[str, dict[str, Any]] = {}
    for clf in CLASSIFIERS:
        tc = time.perf_counter()
        model, _oof, params = fit_with_cv(clf, X[tr], y[tr], patients[tr], selector="lasso", n_splits=args.cv_splits,
                                          seed=args.seed, n_jobs=args.jobs, search=not args.no_search)
        for sp in ("test", "external"):
            m = (d["split"] == sp).to_numpy()
            p = aggregate(model.predict_proba(X[m])[:, 1], groups[m], "mean")
            r = stats.roc_auc_ci(lesion_y.loc[p.index].to_numpy(), p.to_numpy())
            aucs.setdefault(clf, {})[sp] = {"auc": r.auc, "ci_lower": r.ci_lower, "ci_upper": r.ci_upper,
                                            "n_lesions": int(len(p)), "n_gist": int(r.n_cases),
                                            "lesion_prob": {str(k): float(v) for k, v in p.items()}}
        aucs[clf]["selected"] = selected_features(model, names)
        aucs[clf]["params"] = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in params.items()}
        log(f"[{label}] {clf}: test {aucs[clf]['test']['auc']:.3f} external {aucs[clf]['external']['auc']:.3f} "
            f"({time.perf_counter() - tc:.0f} s)")
    counts = {sp: {"images": int((d["split"] == sp).sum()),
                   "lesions": int(d.loc[d["split"] == sp, "lesion_key"].nunique()),
                   "gist_lesions": int(d[d["split"] == sp].groupby("lesion_key")["y"].first().sum())}
              for sp in ("train", "test", "external")}
    return {
        "settings": str(settings_path.relative_to(ROOT)), "n_features": len(names), "features": names,
        "n_failed_images": len(failures), "counts": counts,
        "median_grey_levels_by_image_type": median_levels,
        "features_le2_grey_levels": low, "n_le2": len(low),
        "n_le2_discretisation_dependent": sum(uses_discretisation(n) for n in low),
        "constant_features": constant, "n_constant": len(constant),
        "auc": aucs, "seconds": {"prepare": round(t_prep, 1), "classifiers": round(time.perf_counter() - t0, 1)},
    }


def selected_features(model: Any, names: list[str]) -> list[str]:
    """Feature names the final pipeline's variance filter and selector keep (all of them without a selector)."""
    keep = np.asarray(names)[model.named_steps["variance"].get_support()]
    select = model.named_steps["select"]
    if hasattr(select, "get_support"):
        keep = keep[select.get_support()]
    return [str(n) for n in keep]


def group_names(names: list[str]) -> dict[str, int]:
    """``image type / class`` -> count, sorted."""
    return dict(sorted(Counter(f"{image_type_of(n)}/{feature_class_of(n)}" for n in names).items()))


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Feature names whose status changed between the settings, grouped by image type / class."""
    o_low, n_low = set(old["features_le2_grey_levels"]), set(new["features_le2_grey_levels"])
    o_const, n_const = set(old["constant_features"]), set(new["constant_features"])
    o_all, n_all = set(old["features"]), set(new["features"])
    return {
        "<=2 grey levels before, >2 after": group_names(sorted((o_low - n_low) & n_all)),
        "<=2 grey levels after, not before": group_names(sorted((n_low - o_low) & o_all)),
        "constant before, varying after": group_names(sorted((o_const - n_const) & n_all)),
        "constant after, not before": group_names(sorted((n_const - o_const) & o_all)),
        "dropped (old only)": group_names(sorted(o_all - n_all)),
        "added (new only)": group_names(sorted(n_all - o_all)),
    }


def paired_tests(old: dict[str, Any], new: dict[str, Any], lesion_y: pd.Series) -> dict[str, dict[str, Any]]:
    """Paired DeLong (``stats.delong_paired``), new minus old AUC, per classifier and split (same lesions)."""
    import stats

    out: dict[str, dict[str, Any]] = {}
    for clf in CLASSIFIERS:
        for sp in ("test", "external"):
            a, b = old["auc"][clf][sp]["lesion_prob"], new["auc"][clf][sp]["lesion_prob"]
            keys = sorted(set(a) & set(b))
            r = stats.delong_paired(lesion_y.loc[keys].to_numpy(), [b[k] for k in keys], [a[k] for k in keys])
            out.setdefault(clf, {})[sp] = {"difference": r.difference, "ci_lower": r.ci_lower,
                                           "ci_upper": r.ci_upper, "p_value": r.p_value, "n_lesions": len(keys)}
    return out


def _fmt_auc(a: dict[str, Any]) -> str:
    return f"{a['auc']:.3f} ({a['ci_lower']:.2f}-{a['ci_upper']:.2f})"


def table(results: dict[str, dict[str, Any]]) -> str:
    """The comparison table (plain text, one row per settings file)."""
    head = ["settings", "features", "<=2 grey levels", "constant", "AUC internal test (svm / xgboost / rf)",
            "AUC external (svm / xgboost / rf)"]
    rows = [head]
    for label, r in results.items():
        rows.append([label, str(r["n_features"]), str(r["n_le2"]), str(r["n_constant"]),
                     " / ".join(_fmt_auc(r["auc"][c]["test"]) for c in CLASSIFIERS),
                     " / ".join(_fmt_auc(r["auc"][c]["external"]) for c in CLASSIFIERS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=80, help="internal phantom patients (one lesion each)")
    ap.add_argument("--external-patients", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="phantom seed (external: seed + 1) and split/CV seed")
    ap.add_argument("--centre", default="external-b", help="external phantom centre name")
    ap.add_argument("--size-matched", action="store_true",
                    help="phantoms whose classes share one size distribution (only echo/texture cues remain)")
    ap.add_argument("--cohort", type=Path, help="existing internal manifest.csv (else a phantom is generated)")
    ap.add_argument("--external", type=Path, help="existing external manifest.csv (else a phantom is generated)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/radshift"), help="where phantoms are written")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/radshift/cache"), help="prepare() cache")
    ap.add_argument("--max-frames", type=int, default=2, help="frames kept per multi-frame image (training: 2)")
    ap.add_argument("--cv-splits", type=int, default=5)
    ap.add_argument("--test-size", type=float, default=0.2)
    ap.add_argument("--no-search", action="store_true", help="fixed hyper-parameters (fit_with_cv search=False)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/radshift/compare.json"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    from models.deep_features import seed_everything
    from phantom import generate_cohort

    seed_everything(args.seed, args.jobs)
    manifests = {}
    for key, given, n, seed, centre in (("internal", args.cohort, args.patients, args.seed, "internal"),
                                        ("external", args.external, args.external_patients, args.seed + 1,
                                         args.centre)):
        if given is not None:
            manifests[key] = given
            continue
        folder = args.work / f"{key}-{centre}-p{n}-s{seed}{'-size-matched' if args.size_matched else ''}"
        if not (folder / "manifest.csv").is_file():
            log(f"generating {key} phantom: {n} patients, seed {seed}, centre {centre}, "
                f"size_matched {args.size_matched}")
            generate_cohort(folder, n, seed, centre=centre, size_matched=args.size_matched)
        manifests[key] = folder / "manifest.csv"
    data = load_rows(manifests["internal"], manifests["external"], args.max_frames, args.test_size, args.seed)
    log(f"{len(data)} rows: {data['split'].value_counts().to_dict()}")
    results = {}
    for label, path in (("old (before issue 16)", OLD_SETTINGS), ("new (IBSI, issue 16)", NEW_SETTINGS)):
        results[label] = run_settings(label, path, data, args.cache, args, log)
    old, new = results.values()
    changed = changes(old, new)
    paired = paired_tests(old, new, data.groupby("lesion_key")["y"].first())
    out = {"synthetic": True, "note": "eusdx synthetic phantom: a software check, not a clinical claim",
           "argv": sys.argv, "manifests": {k: str(v) for k, v in manifests.items()},
           "seconds": round(time.perf_counter() - t_start, 1), "results": results, "changes": changed,
           "paired_delong_new_minus_old": paired}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print("SYNTHETIC PHANTOM: a software check, not a clinical claim.")
    for label, r in results.items():
        c = r["counts"]
        print(f"{label}: {r['settings']}; images train/test/external {c['train']['images']}/{c['test']['images']}/"
              f"{c['external']['images']}, lesions {c['train']['lesions']}/{c['test']['lesions']}/"
              f"{c['external']['lesions']} (GIST {c['train']['gist_lesions']}/{c['test']['gist_lesions']}/"
              f"{c['external']['gist_lesions']}); failed images {r['n_failed_images']}")
        print("  median ROI grey levels (train): " + ", ".join(
            f"{t} {v:g}" for t, v in r["median_grey_levels_by_image_type"].items()))
        print(f"  <=2 grey levels: {r['n_le2']} (of which discretisation-dependent: "
              f"{r['n_le2_discretisation_dependent']})")
        for clf in CLASSIFIERS:
            sel = r["auc"][clf]["selected"]
            by_class = Counter(feature_class_of(n) for n in sel)
            print(f"  {clf} final model uses {len(sel)} features: " + ", ".join(
                f"{c} {k}" for c, k in sorted(by_class.items())) + "; log-sigma: "
                f"{sum(image_type_of(n).startswith('log-sigma') for n in sel)}")
    print()
    print(table(results))
    print("\npaired DeLong, AUC new - old (95 % CI, p), same lesions:")
    for clf, by in paired.items():
        print(f"  {clf:8s} " + "; ".join(f"{sp} {v['difference']:+.3f} ({v['ci_lower']:+.3f} to {v['ci_upper']:+.3f}, "
                                         f"p {v['p_value']:.2f})" for sp, v in by.items()))
    print()
    for what, groups in changed.items():
        total = sum(groups.values())
        print(f"{what}: {total}" + ("" if not total else ": " + ", ".join(f"{g} {k}" for g, k in groups.items())))
    print(f"\nwall time {out['seconds']:.0f} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
