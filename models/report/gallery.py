"""Failure analysis: the misclassified lesions of the primary model, with their thumbnails.

A lesion is misclassified when ``(P(GIST) >= threshold) != (y == 1)`` at the model's fixed threshold.
Thumbnails (first analysed image with its ROI outlined) come from the bundle's ``evaluation/thumbs``
and are copied next to the report; without them the gallery is a table and says why.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from models.report.inputs import EvaluationInputs

__all__ = ["misclassified_gallery", "MAX_GALLERY"]

MAX_GALLERY = 40


def _primary(inputs: EvaluationInputs) -> str | None:
    cfg = inputs.bundle.get("config") or {}
    for cand in (cfg.get("primary"), inputs.provenance.get("primary"), "svm/combined"):
        if isinstance(cand, str) and cand in inputs.data:
            return cand
    return inputs.models[0] if inputs.models else None


def misclassified_gallery(inputs: EvaluationInputs, thresholds: dict[str, dict[str, Any]],
                          out_dir: Path) -> dict[str, Any]:
    """Rows ``{split, lesion_id, patient_id, truth, prob, threshold, error, image}`` for test and external.

    Copies the thumbnails it shows into ``out_dir/gallery/``.
    """
    model = _primary(inputs)
    if model is None:
        return {"available": False, "reason": "no model in the predictions"}
    thr = float(thresholds[model]["value"])
    rows: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    for split in ("test", "external"):
        mp = inputs.data[model].get(split)
        if mp is None:
            continue
        wrong = [i for i in range(mp.y.size) if bool(mp.prob[i] >= thr) != bool(mp.y[i] == 1)]
        counts[split] = {"lesions": int(mp.y.size), "misclassified": len(wrong)}
        # most confident errors first
        wrong.sort(key=lambda i: -abs(float(mp.prob[i]) - thr))
        for i in wrong:
            rows.append({"split": split, "lesion_id": mp.lesion_id[i], "patient_id": mp.patient_id[i],
                         "truth": "GIST" if mp.y[i] == 1 else "leiomyoma", "prob": float(mp.prob[i]),
                         "threshold": thr, "error": "false negative" if mp.y[i] == 1 else "false positive",
                         "image": None})
    shown = rows[:MAX_GALLERY]
    have_thumbs = inputs.thumbs_dir is not None
    if have_thumbs:
        assert inputs.thumbs_dir is not None
        dest = out_dir / "gallery"
        for r in shown:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{r['split']}_{r['lesion_id']}")
            src = inputs.thumbs_dir / f"{safe}.png"
            if src.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / src.name)
                r["image"] = f"gallery/{src.name}"
    return {"available": True, "model": model, "threshold": thr, "counts": counts, "rows": shown,
            "not_shown": len(rows) - len(shown),
            "images_note": None if have_thumbs else
            "no thumbnails: this bundle has no evaluation/thumbs (it predates issue 16)"}
