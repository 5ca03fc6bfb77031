"""Shortcut study on the synthetic phantom: test AUCs of image models next to acquisition and size baselines.

SYNTHETIC DATA ONLY: every number this prints is about the phantom and the software, never a clinical result.

For a default and a size-matched cohort (``--patients`` each, one lesion per patient) this takes the
canonical still of every lesion in memory (``phantom.plan_cohort``; no DICOM round trip), the
phantom's own lesion mask as the ROI (what the SEG carries), the preprocessing, pyradiomics features
and frozen (not fine-tuned) backbone features of the training code, then an 8:2 patient split and:

- svm / rf on radiomics, deep (DeiT-tiny as initialised) and combined features (fixed hyper-parameters);
- our late-fusion stacker (LR on the SVM/RF radiomics and deep OOF probabilities);
- paper 004's radiomics LASSO logistic regression, a LASSO LR on frozen random-init ResNet-50 features,
  and paper 004's integrated model fusing the two;
- the size-only and header-only baselines.

Every split and fold is grouped by patient. AUCs with DeLong 95 % CIs (``stats``).

Usage: ``python scripts/phantom_study.py --patients 200 --out var/phantom-study.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _features(plans: list[Any], image_size: int, log: Any) -> dict[str, Any]:
    import yaml

    from models.baselines import lesion_header
    from models.deep_features import NetConfig
    from models._deep_stage import frozen_features
    from models.preprocess import PreprocessConfig, lesion_window, mask_to_work, preprocess
    from models.radiomics_features import DEFAULT_SETTINGS, FeatureCache, RadiomicsError, RadiomicsExtractor

    settings = yaml.safe_load(DEFAULT_SETTINGS.read_text(encoding="utf-8"))
    extractor = RadiomicsExtractor(settings, FeatureCache(None))
    cfg = PreprocessConfig()
    rad, windows, keep = [], [], []
    t = time.perf_counter()
    for i, p in enumerate(plans):
        img = p.render_first()
        pre = preprocess(img.pixels, cfg, mm_per_pixel=img.mm_per_pixel)
        mask = mask_to_work(img.mask, pre)
        try:
            rad.append(extractor.extract(pre.image, mask, spacing=pre.mm_per_pixel or 1.0))
        except RadiomicsError:
            continue
        windows.append(lesion_window(pre.image, mask, image_size, mm_per_pixel=pre.mm_per_pixel, window_mm=60.0))
        keep.append(i)
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{len(plans)} images ({time.perf_counter() - t:.0f} s)")
    names = list(rad[0])
    Xr = np.array([[r.get(n, np.nan) for n in names] for r in rad], dtype=np.float64)
    cache = Path("var/phantom-study-cache")
    deit = NetConfig(name="deit_tiny_patch16_224", image_size=image_size, epochs=0, augment_factor=0, threads=1)
    Xd = frozen_features(deit, windows, "cpu", cache)[1]
    res = NetConfig(name="resnet50", image_size=image_size, epochs=0, augment_factor=0, threads=1)
    Xres = frozen_features(res, windows, "cpu", cache)[1]
    kept = [plans[i] for i in keep]
    return {
        "plans": kept, "Xr": Xr, "Xd": Xd, "Xres": Xres,
        "header": [lesion_header(p.header_fields()) for p in kept],
        "size": np.array([[p.spec.size_mm] for p in kept]),
        "y": np.array([p.label == "GIST" for p in kept], dtype=int),
        "patient": np.array([p.patient_id for p in kept]),
    }


def _study(f: dict[str, Any], seed: int) -> dict[str, Any]:
    from sklearn.feature_extraction import DictVectorizer

    import stats
    from models._fusion import fit_integrated
    from models.baselines import fit_baseline
    from models.classifiers import fit_stacker, fit_with_cv, logit
    from models.dataset import split_by_patient

    y, patient = f["y"], f["patient"]
    df = pd.DataFrame({"patient_id": patient, "y": y})
    tr, te = split_by_patient(df, test_size=0.2, seed=seed)
    ids = pd.Index(patient)
    probs: dict[str, dict[str, pd.Series]] = {}

    def add(key: str, oof: np.ndarray, test: np.ndarray) -> None:
        probs[key] = {"train": pd.Series(oof, index=ids[tr]), "test": pd.Series(test, index=ids[te])}

    mats = {"radiomics": f["Xr"], "deep": f["Xd"], "combined": np.hstack([f["Xr"], f["Xd"]])}
    for modality, X in mats.items():
        for clf in ("svm", "rf"):
            split_at = f["Xr"].shape[1] if modality == "combined" else None
            model, oof, _ = fit_with_cv(clf, X[tr], y[tr], patient[tr], search=False, seed=seed, split_at=split_at)
            add(f"{clf}/{modality}", oof, model.predict_proba(X[te])[:, 1])
    for key, X in (("lasso-lr/radiomics", f["Xr"]), ("lasso-lr/resnet50-random-frozen", f["Xres"])):
        model, oof, _ = fit_with_cv("lasso-lr", X[tr], y[tr], patient[tr], search=False, seed=seed)
        add(key, oof, model.predict_proba(X[te])[:, 1])
    singles = [f"{c}/{m}" for m in ("radiomics", "deep") for c in ("svm", "rf")]
    P = np.column_stack([probs[k]["train"].to_numpy() for k in singles])
    stacker, oof = fit_stacker(P, y[tr], seed=seed, groups=patient[tr])
    Q = np.column_stack([probs[k]["test"].to_numpy() for k in singles])
    add("lr-stacker/late-fusion", oof, stacker.predict_proba(logit(Q))[:, 1])
    lesion_y = pd.Series(y, index=ids)
    integ = fit_integrated(probs, lesion_y, pd.Series(patient, index=ids), seed=seed)
    if integ is not None:
        probs["paper004-integrated/late-fusion"] = integ[1]
    dv = DictVectorizer(sparse=False).fit([f["header"][i] for i in tr])
    H = np.asarray(dv.transform(f["header"]), dtype=np.float64)
    for key, X in (("baseline/size-only", f["size"]), ("baseline/header-only", H)):
        model, oof = fit_baseline(X[tr], y[tr], patient[tr], seed=seed)
        add(key, oof, model.predict_proba(X[te])[:, 1])
    out = {}
    for key, by in probs.items():
        s = by["test"]
        r = stats.roc_auc_ci(lesion_y.loc[s.index].to_numpy(), s.to_numpy())
        out[key] = {"auc": r.auc, "ci_lower": r.ci_lower, "ci_upper": r.ci_upper, "n_test": int(len(s))}
    return {"n_train": int(len(tr)), "n_test": int(len(te)), "n_test_gist": int(y[te].sum()), "models": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--out", type=Path, default=Path("var/phantom-study.json"))
    ap.add_argument("--cohort", choices=("both", "default", "size-matched"), default="both",
                    help="which cohort(s) to run (two processes can share the work)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from models.deep_features import seed_everything
    from phantom import plan_cohort

    seed_everything(args.seed, 1)
    result: dict[str, Any] = {"synthetic": True,
                              "note": "eusdx synthetic phantom: software check only, never a clinical claim",
                              "patients": args.patients, "seed": args.seed, "image_size": args.image_size,
                              "deep_features": "frozen, random initialisation (no fine-tuning)",
                              "roi": "phantom lesion mask (as the SEG)", "images_per_lesion": 1, "cohorts": {}}
    for name, matched in (("default", False), ("size-matched", True)):
        if args.cohort not in ("both", name):
            continue
        t = time.perf_counter()
        log(f"{name} cohort: {args.patients} patients")
        plans = plan_cohort(args.patients, args.seed, size_matched=matched)
        f = _features(plans, args.image_size, log)
        res = _study(f, args.seed)
        res["seconds"] = round(time.perf_counter() - t, 1)
        result["cohorts"][name] = res
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        log(f"{name}: done in {res['seconds']} s")
        for key, m in sorted(res["models"].items()):
            log(f"  {key:40s} AUC {m['auc']:.3f} ({m['ci_lower']:.3f}-{m['ci_upper']:.3f})  n={m['n_test']}")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
