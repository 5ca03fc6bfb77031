"""Render the report dictionary as one self-contained HTML page (inline CSS, PNGs referenced relatively).

Only values from the dictionary are printed (rounded), so ``report.json`` holds every number shown.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["render_html", "SYNTHETIC_BANNER", "UNKNOWN_BANNER"]

SYNTHETIC_BANNER = "Synthetic phantom data \u2014 not a clinical result"
UNKNOWN_BANNER = "Data provenance unknown (no metrics.json) \u2014 not a clinical result"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:1.5em;margin:0 0 8px} h2{font-size:1.2em;margin-top:28px;border-bottom:1px solid #ccc}
.banner{background:#b00020;color:#fff;font-weight:bold;font-size:1.15em;padding:12px 16px;margin:8px 0 16px;
 border-radius:4px;text-transform:uppercase;letter-spacing:.03em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #bbb;padding:4px 7px;text-align:right;white-space:nowrap}
th{background:#eef1f5} td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
caption{caption-side:top;text-align:left;font-weight:bold;padding:4px 0}
.note{color:#555;font-size:12px} img{max-width:100%;border:1px solid #ddd;margin:6px 0}
.sig{font-weight:bold} .wrap{overflow-x:auto;max-width:100%}
"""


def _n(v: Any, digits: int = 3) -> str:
    if v is None:
        return "\u2014"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{float(v):.{digits}f}"


def _p(v: Any) -> str:
    if v is None:
        return "\u2014"
    return "<0.001" if float(v) < 0.001 else f"{float(v):.3f}"


def _ci(d: dict[str, Any] | None) -> str:
    if not d or d.get("estimate") is None:
        return "\u2014"
    return f"{_n(d['estimate'])} ({_n(d['lower'])}\u2013{_n(d['upper'])})"


def _table(tid: str, caption: str, head: list[str], rows: list[list[str]], left: int = 1,
           left_cols: tuple[int, ...] = (), text: bool = False) -> str:
    """A table; the first ``left`` columns and those in ``left_cols`` (text) are left-aligned."""

    def is_left(i: int) -> bool:
        return i < left or i in left_cols or (i - len(head)) in left_cols

    ths = "".join(f'<th class="l">{h}</th>' if is_left(i) else f"<th>{h}</th>" for i, h in enumerate(head))
    body = []
    for r in rows:
        tds = "".join(f'<td class="l">{c}</td>' if is_left(i) else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    kind = ' data-kind="text"' if text else ""
    return (f'<div class="wrap"><table id="{tid}"{kind}><caption>{escape(caption)}</caption><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _img(src: str | None, alt: str) -> str:
    if not src:
        return f'<p class="note">{escape(alt)}: nothing to draw.</p>'
    return f'<img src="{escape(src)}" alt="{escape(alt)}">'


def _table2(data: dict[str, Any], split: str) -> str:
    head = ["Model", "n (GIST/LM)", "Threshold", "AUC (95% CI)", "Accuracy", "Sensitivity", "Specificity",
            "PPV", "NPV", "TP/FP/TN/FN"]
    rows = []
    for r in data["table2"]["rows"]:
        if r["split"] != split:
            continue
        c = r["counts"]
        auc = _ci(r["auc"]) if r["auc"] else f'\u2014 <span class="note">{escape(r.get("auc_note", ""))}</span>'
        rows.append([
            escape(r["model"]), f"{r['n']} ({r['n_gist']}/{r['n_leiomyoma']})", _n(r["threshold"]), auc,
            _ci(r["accuracy"]), _ci(r["sensitivity"]), _ci(r["specificity"]), _ci(r["ppv"]), _ci(r["npv"]),
            f"{c['tp']}/{c['fp']}/{c['tn']}/{c['fn']}",
        ])
    ci = data["table2"]["ci_method"]
    return _table(f"table2-{split}", f"Table 2 ({split}): discrimination and diagnostic performance "
                  f"(AUC: DeLong CI; proportions: {ci} CI)", head, rows)


def _table3(data: dict[str, Any], key: str = "table3") -> str:
    t3 = data.get(key)
    if not t3:
        return '<p class="note">No external split: no paired tests on it.</p>'
    keys = t3["models"]
    cell: dict[tuple[str, str], str] = {}
    for pr in t3["pairs"]:
        if pr["z"] is None:
            txt = f'<span class="note">{escape(pr.get("note", "not computed"))}</span>'
        else:
            cls = ' class="sig"' if pr["p_holm"] is not None and pr["p_holm"] < 0.05 else ""
            txt = f"<span{cls}>Z={_n(pr['z'], 2)}<br>p={_p(pr['p_value'])}<br>p<sub>Holm</sub>={_p(pr['p_holm'])}</span>"
        cell[(pr["a"], pr["b"])] = txt
    rows = []
    for a in keys:
        rows.append([escape(a)] + [cell.get((a, b), "") if a != b else "\u00b7" for b in keys])
    tid = "table3" if key == "table3" else "table3-external"
    return _table(tid, f"Paired DeLong tests on the {t3['split']} split (row model minus column model; two-sided p "
                  f"and Holm-adjusted p over the {t3['tests']} tests of this split; bold: Holm p<0.05)",
                  ["Model"] + [escape(k) for k in keys], rows)


def _bootstrap_table(data: dict[str, Any], split: str) -> str:
    prev = data["deployment_prevalence"]["value"]
    head = ["Model", "Patients", "AUC (bootstrap CI)", "Sensitivity", "Specificity", "PPV", "NPV",
            f"PPV at prevalence {_n(prev, 2)}", f"NPV at prevalence {_n(prev, 2)}"]
    rows = []
    for r in data["table2"]["rows"]:
        if r["split"] != split:
            continue
        b = r["bootstrap"]
        if not b.get("available"):
            rows.append([escape(r["model"]), str(r["patients"]), f'<span class="note">{escape(b["reason"])}</span>',
                         "", "", "", "", "", ""])
            continue
        rows.append([escape(r["model"]), str(r["patients"])] + [_ci(b[k]) for k in (
            "auc", "sensitivity", "specificity", "ppv", "npv", "ppv_at_prevalence", "npv_at_prevalence")])
    bs = data["bootstrap"]
    return _table(f"table2-bootstrap-{split}", f"Table 2b ({split}): patient-clustered bootstrap 95% CIs "
                  f"({bs['n_boot']} replicates resampling patients, percentile intervals, seed {bs['seed']}); "
                  "PPV/NPV also at the deployment prevalence (Bayes)", head, rows)


def _table4(data: dict[str, Any]) -> str:
    head = ["Model", "Split", "n", "Brier", "Calibration-in-the-large (95% CI)", "Calibration slope",
            "ECE", "ECE bin counts", "Spiegelhalter z (p)", "Hosmer-Lemeshow \u03c7\u00b2 (df, p)", "Note"]
    rows = []
    for r in data["table4"]["rows"]:
        hl = r["hosmer_lemeshow"]
        hl_txt = (f"{_n(hl['statistic'], 2)} ({hl['df']}, {_p(hl['p_value'])})" if hl else
                  f'<span class="note">{escape(r.get("hosmer_lemeshow_note") or "not reported")}</span>')
        sz = "\u2014" if r["spiegelhalter_z"] is None else f"{_n(r['spiegelhalter_z'], 2)} ({_p(r['spiegelhalter_p'])})"
        ece = r["ece"]
        rows.append([escape(r["model"]), r["split"], str(r["n"]), _n(r["brier"]), _ci(r["calibration_in_the_large"]),
                     _n(r["calibration_slope"]), _n(ece["estimate"]), " ".join(str(c) for c in ece["bin_counts"]),
                     sz, hl_txt, escape(r.get("calibration_note", ""))])
    t4 = data["table4"]
    return _table("table4", f"Table 4: calibration. Calibration-in-the-large: intercept with the slope fixed at 1 "
                  "(offset logistic); slope: logistic recalibration as rms val.prob; ECE over "
                  f"{t4['ece_bins']} equal-width bins (counts of the non-empty bins); Hosmer-Lemeshow only from "
                  f"{t4['hosmer_lemeshow_min_n']} lesions", head, rows, left=2, left_cols=(-1, -2))


def _external(data: dict[str, Any]) -> str:
    ext = data["external"]
    if not ext:
        return '<p class="note">No external validation split in the predictions.</p>'
    head = ["Model", "n test", "n external", "AUC internal test (95% CI)", "AUC external (95% CI)", "Difference",
            "D", "df", "p", "Note"]

    def auc(v: Any, ci: Any) -> str:
        return "\u2014" if v is None else f"{_n(v)} ({_n(ci[0])}\u2013{_n(ci[1])})"

    rows = [[escape(r["model"]), str(r["n_test"]), str(r["n_external"]), auc(r["auc_test"], r["auc_test_ci"]),
             auc(r["auc_external"], r["auc_external_ci"]), _n(r["difference"]), _n(r["d"], 3), _n(r["df"], 2),
             _p(r["p_value"]), escape(r.get("note", ""))] for r in ext["rows"]]
    return _table("table-external", "Internal vs external, per model: AUCs with DeLong CIs and pROC's unpaired "
                  "DeLong test", head, rows, left_cols=(-1,))


def _shap(data: dict[str, Any]) -> str:
    sh = data.get("shap") or {}
    if not sh.get("available"):
        return f'<p id="shap-unavailable" class="note">SHAP not available: {escape(sh.get("reason", "no SHAP input"))}.</p>'
    parts = []
    for i, e in enumerate(sh["entries"]):
        parts.append(f"<h3>{escape(e['model'])}</h3>")
        unit = ""
        if e.get("n_lesions"):
            unit = (f" ({e['n_explained']} of {e['n_rows']} rows; a row is one image, the rows are images of "
                    f"{e['n_lesions']} test lesions)")
        parts.append(f'<p class="note shap-unit">{escape(e["method"])} explainer on {e["n_explained"]} rows{unit}'
                     f'{"" if not e["n_background"] else ", " + str(e["n_background"]) + " background rows"}; '
                     f"values explain {escape(e['output'])}.</p>")
        parts.append(_img(e["png"], f"SHAP {e['model']}"))
        rows = [[str(t["rank"]), escape(t["feature"]), _n(t["mean_abs_shap"], 4)] for t in e["top"]]
        parts.append(_table(f"table-shap-{i}", f"Top features by mean |SHAP| ({e['model']})",
                            ["Rank", "Feature", "Mean |SHAP|"], rows, left=2))
    return "".join(parts)


def _provenance(data: dict[str, Any]) -> str:
    prov = data.get("provenance") or {}
    if not prov:
        return '<p class="note" id="provenance">Backbone and training budget unknown (no metrics.json).</p>'
    init = prov.get("backbone_init") or {}
    init_txt = init.get("description") or init.get("kind", "unknown")
    if init.get("sha256"):
        init_txt += f" (SHA-256 {init['sha256']})"
    rows = [["Backbone", escape(str(prov.get("backbone", "unknown")))],
            ["Backbone initialisation", escape(str(init_txt))],
            ["Deep features", escape(str(prov.get("deep_mode", "unknown")))]]
    for k, v in (prov.get("training_budget") or {}).items():
        rows.append([escape(k.replace("_", " ")), escape(str(v))])
    return _table("provenance", "How the networks were initialised and trained", ["Item", "Value"], rows,
                  left=2)


def _unavailable(eid: str, title: str, reason: str) -> str:
    return f'<p class="note" id="{eid}">{escape(title)}: {escape(reason)}.</p>'


def _flow(data: dict[str, Any]) -> str:
    fl = data["flow"]
    if not fl.get("available"):
        return _unavailable("participant-flow", "Participant flow", fl["reason"])
    head = ["Partition", "Patients listed", "Lesions listed", "Images listed", "Images excluded", "Lesions excluded",
            "Lesions analysed", "Images analysed", "Lesions scored per model (min\u2013max)"]
    rows = [[r["split"], str(r["patients_listed"]), str(r["lesions_listed"]), str(r["images_listed"]),
             str(r["images_excluded"]), str(r["lesions_excluded"]), str(r["lesions_analysed"]),
             str(r["images_analysed"]), f"{r['lesions_scored_min']}\u2013{r['lesions_scored_max']}"] for r in fl["rows"]]
    return (_table("participant-flow", "Participant flow per partition (patients \u2192 lesions \u2192 images)",
                   head, rows) + f'<p class="note">Exclusions: {escape(fl["exclusion_rule"])}.</p>')


_CHAR_NAMES = {"size_mm": "Size, mm: median (IQR)", "layer": "Layer of origin", "echo_pattern": "Echo pattern",
               "device": "Device", "centre": "Centre"}


def _table1(data: dict[str, Any]) -> str:
    t1 = data["table1"]
    if not t1.get("available"):
        return _unavailable("table1", "Table 1", t1["reason"])
    cols = t1["columns"]
    head = ["Characteristic"] + [f"{c['split']}: {c['group']}" for c in cols]
    rows = [["Patients"] + [str(c["patients"]) for c in cols],
            ["Lesions"] + [str(c["lesions"]) for c in cols],
            ["Images (analysed)"] + [str(c["images"]) for c in cols]]
    for ch in t1["characteristics"]:
        if ch == "size_mm":
            cells = []
            for c in cols:
                m = c["characteristics"][ch]
                cells.append("\u2014" if m["median"] is None else
                             f"{_n(m['median'], 1)} ({_n(m['q1'], 1)}\u2013{_n(m['q3'], 1)})")
            rows.append([_CHAR_NAMES[ch]] + cells)
            continue
        cats = sorted({k for c in cols for k in c["characteristics"][ch]})
        for cat in cats:
            rows.append([f"{escape(_CHAR_NAMES.get(ch, ch))}: {escape(cat)}"]
                        + [str(c["characteristics"][ch].get(cat, 0)) for c in cols])
    return _table("table1", "Table 1: characteristics by partition and class (lesions with an analysable image; "
                  "counts of lesions unless stated)", head, rows) + f'<p class="note">{escape(t1["note"])}.</p>'


def _prevalence(data: dict[str, Any]) -> str:
    rows = [[r["split"], str(r["lesions"]), str(r["gist"]), _ci(r["prevalence"])] for r in data["prevalence"]]
    dp = data["deployment_prevalence"]
    return (_table("table-prevalence", "Prevalence of GIST per partition (Wilson 95% CI)",
                   ["Partition", "Lesions", "GIST", "Prevalence (95% CI)"], rows)
            + f'<p class="note" id="deployment-prevalence">PPV and NPV are also given at a deployment prevalence of '
              f'{_n(dp["value"], 2)} ({escape(dp["source"])}), by Bayes\u2019 rule from sensitivity and specificity; '
              "the decision curves are drawn at it as well.</p>")


def _gallery(data: dict[str, Any]) -> str:
    g = data["gallery"]
    if not g.get("available"):
        return _unavailable("gallery", "Misclassified lesions", g["reason"])
    summary = "; ".join(f"{s}: {c['misclassified']} of {c['lesions']} lesions" for s, c in g["counts"].items())
    more = f"; {g['not_shown']} more not shown" if g["not_shown"] else ""
    images = f" {escape(g['images_note'])}." if g["images_note"] else ""
    parts = [f'<p class="note" id="gallery">Model {escape(g["model"])} at threshold {_n(g["threshold"])}. '
             f"Misclassified: {escape(summary) or 'no test or external lesions'}. Most confident errors first"
             f"{more}.{images}</p>"]
    rows = []
    for r in g["rows"]:
        img = (f'<img src="{escape(r["image"])}" alt="lesion {escape(r["lesion_id"])}" style="max-width:160px">'
               if r["image"] else "no image")
        rows.append([escape(r["lesion_id"]), r["split"], escape(r["truth"]), escape(r["error"]), _n(r["prob"]), img])
    parts.append(_table("table-gallery", "Gallery of misclassified lesions (first analysed image, ROI outlined)",
                        ["Lesion", "Partition", "Truth", "Error", "P(GIST)", "Image"], rows, left=4, text=True))
    return "".join(parts)


def _auto_roi(data: dict[str, Any]) -> str:
    a = data["auto_roi"]
    dice = a.get("dice") or {}
    agreement = ""
    if dice.get("n"):
        agreement = (f"Agreement of the automatic ROI with the SEG on the test/external images: Dice median "
                     f"{_n(dice.get('median'))}, mean {_n(dice.get('mean'))} over {dice['n']} images. ")
    if not a["available"]:
        return (f'<p class="note" id="auto-roi">Results with the automatic ROI beside the SEG ROI: '
                f"{escape(a['reason'])}. {escape(agreement)}</p>")
    parts = [f'<p class="note" id="auto-roi">The worker finds the lesion itself when no DICOM SEG arrives. Every '
             f"deployable model was scored again on the test and external images with that automatic ROI, "
             f"exactly as the worker computes it; below, both ROIs side by side on the lesions both could "
             f"analyse ({escape(a['comparison'])}; {a['tests']} tests). {escape(agreement)}</p>"]
    cov_rows = []
    for split, c in (a.get("coverage") or {}).items():
        why = ", ".join(f"{escape(k)} {v}" for k, v in sorted((c.get("images_left_out") or {}).items())) or "none"
        cov_rows.append([escape(split), f"{c['images_auto']} of {c['images_seg']}",
                         f"{c['lesions_auto']} of {c['lesions_seg']}", why])
    if cov_rows:
        parts.append(_table("table-auto-roi-coverage",
                            "What the automatic ROI could analyse (a lesion with no image left gets a no-lesion "
                            "report from the worker)", ["Set", "Images", "Lesions", "Images left out, by reason"],
                            cov_rows, left=1, left_cols=(3,)))
    rows = []
    for r in a["rows"]:
        rows.append([escape(r["model"]), r["split"], f"{r['lesions_both']} ({r['lesions_seg']}/{r['lesions_auto']})",
                     _ci(r["auc_seg"]), _ci(r["auc_auto"]), _ci(r["difference"]), _p(r["p_value"]),
                     _p(r.get("p_holm")), _n(r["sensitivity_seg"]), _n(r["sensitivity_auto"]),
                     _n(r["specificity_seg"]), _n(r["specificity_auto"]),
                     escape(r.get("note", ""))])
    parts.append(_table("table-auto-roi", "SEG ROI vs automatic ROI (lesion level, at each model's threshold)",
                        ["Model", "Set", "Lesions both (SEG/auto)", "AUC SEG (95% CI)", "AUC automatic (95% CI)",
                         "\u0394AUC auto\u2212SEG (95% CI)", "p", "p Holm", "Se SEG", "Se auto", "Sp SEG",
                         "Sp auto", "Note"], rows, left=2, left_cols=(12,)))
    return "".join(parts)


def _methods(data: dict[str, Any]) -> str:
    m = data["methods"]
    parts = [f'<p id="methods-paragraph">{escape(m["paragraph"])}</p>',
             _table("methods-identity", "Model identification (the identifiers the DICOM SR carries)",
                    ["Item", "Value"], [[escape(a), escape(b)] for a, b in m["identity"]], left=2, text=True),
             _table("methods-items", "Methods, read from the bundle", ["Item", "Value"],
                    [[escape(a), escape(b)] for a, b in m["items"]], left=2, text=True)]
    if m["radiomics"]:
        parts.append(_table("methods-radiomics", "Radiomics settings (the bundle's radiomics.yaml)", ["Setting", "Value"],
                            [[escape(a), escape(b)] for a, b in m["radiomics"]], left=2, text=True))
    else:
        parts.append(_unavailable("methods-radiomics", "Radiomics settings", "not recorded in this bundle"))
    if m["libraries"]:
        parts.append(_table("methods-libraries", "Library versions", ["Library", "Version"],
                            [[escape(a), escape(b)] for a, b in m["libraries"]], left=2, text=True))
    else:
        parts.append(_unavailable("methods-libraries", "Library versions", "not recorded in this bundle"))
    return "".join(parts)


def render_html(data: dict[str, Any], figures: dict[str, str | None]) -> str:
    """The report page. ``figures`` maps figure names (``roc_test``...) to relative PNG paths."""
    synthetic = data["synthetic"]
    banner = ""
    if synthetic is True:
        banner = f'<div class="banner" id="synthetic-banner">{SYNTHETIC_BANNER}</div>'
    elif synthetic is None:
        banner = f'<div class="banner" id="synthetic-banner">{UNKNOWN_BANNER}</div>'
    counts = [[s, str(c["lesions"]), str(c["gist"]), str(c["leiomyoma"]), str(c["patients"])]
              for s, c in data["counts"].items()]
    thr = [[escape(k), _n(v["value"]), escape(v["source"])] for k, v in data["thresholds"].items()]
    out = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>eusdx evaluation report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>eusdx evaluation report: GIST vs leiomyoma</h1>", banner,
        f'<p class="note">Generated {escape(data["generated_utc"])} \u00b7 schema {escape(data["schema"])} '
        f'\u00b7 confidence level {_n(data["confidence_level"], 2)} \u00b7 positive class GIST (y=1).</p>',
        "<h2>Data</h2>",
        f'<p id="unit-of-analysis"><b>Unit of analysis:</b> {escape(data["unit_of_analysis"]["text"])}</p>',
        "<h3>Participant flow</h3>", _flow(data),
        "<h3>Table 1</h3>", _table1(data),
        _table("table-counts", "Lesions per split", ["Split", "Lesions", "GIST", "Leiomyoma", "Patients"], counts),
        _prevalence(data),
        f'<p class="note">Patients with lesions in both train and test: {data["patients_in_train_and_test"]}.</p>',
        _table("table-thresholds", "Decision thresholds (positive iff P(GIST) \u2265 threshold)",
               ["Model", "Threshold", "Source"], thr, left_cols=(2,)),
        "<h2>Model</h2>", _provenance(data),
        "<h2>Table 2: performance</h2>",
    ]
    out += [_table2(data, s) for s in data["splits"]]
    out += [_bootstrap_table(data, s) for s in data["splits"]]
    if data.get("baseline_models"):
        out.append('<p class="note" id="baseline-note">Rows <code>baseline/*</code> are shortcut baselines, '
                   "lesion-level logistic regressions on DICOM header fields alone, on the pixels outside the "
                   "B-mode sector alone, and on the lesion's long axis alone. An image model that does not beat "
                   "them is not shown to read the lesion's appearance.</p>")
    out += [
        "<h2>Table 3: DeLong comparisons (test)</h2>", _table3(data), _img(figures.get("delong_test"), "DeLong p values"),
        "<h2>Table 4: calibration</h2>", _table4(data), _img(figures.get("brier"), "Brier scores"),
        "<h2>External validation</h2>", _external(data),
        "<h3>Paired DeLong tests on the external set</h3>", _table3(data, "table3_external"),
        "<h2>Automatic ROI</h2>", _auto_roi(data),
        "<h2>ROC curves</h2>", *[_img(figures.get(f"roc_{s}"), f"ROC {s}") for s in data["splits"]],
        "<h2>Calibration curves</h2>", *[_img(figures.get(f"calibration_{s}"), f"Calibration {s}") for s in data["splits"]],
        "<h2>Decision curves</h2>", *[_img(figures.get(f"decision_{s}"), f"Decision curve {s}") for s in data["splits"]],
        f'<p class="note" id="decision-prevalence">The same curves at the deployment prevalence '
        f'{_n(data["deployment_prevalence"]["value"], 2)} (net benefit = Se\u00b7\u03c0 \u2212 (1\u2212Sp)(1\u2212\u03c0)'
        "\u00b7pt/(1\u2212pt)):</p>",
        *[_img(figures.get(f"decision_prevalence_{s}"), f"Decision curve {s} at the deployment prevalence")
          for s in data["splits"]],
        "<h2>Misclassified lesions</h2>", _gallery(data),
        "<h2>SHAP: top features</h2>", _shap(data),
        "<h2 id=\"methods\">Methods (generated from the bundle)</h2>", _methods(data),
        "<h3>Statistical methods</h3><ul class=\"note\">",
        "<li>AUC and its 95% CI: DeLong variance (fast midrank algorithm), normal interval clipped to [0, 1], "
        "as R pROC. Paired comparisons: DeLong Z; external: pROC's unpaired D with Welch-type df.</li>",
        f"<li>Proportions: {escape(data['table2']['ci_method'])} interval. Train rows are out-of-fold predictions.</li>",
        "<li>Calibration intercept/slope: logistic regression of the outcome on logit(P), as rms val.prob; "
        "calibration curves use quantile bins; decision curves: net benefit = TP/n \u2212 FP/n \u00b7 pt/(1\u2212pt).</li>",
        "<li>Bootstrap: patients are resampled with replacement (all their lesions move together); percentile "
        "intervals. Multiplicity: Holm's step-down adjustment over all paired DeLong tests of a split.</li>",
        "<li>Calibration-in-the-large: logistic regression of the outcome with logit(P) as offset (slope fixed at 1). "
        "ECE: bin-count-weighted mean |observed \u2212 predicted| over equal-width bins. Hosmer-Lemeshow only "
        "from the stated minimum sample size, since below it the test has almost no power.</li>",
        "<li>All model numbers here come from the eusdx synthetic phantom when the banner says so: they show that "
        "the software works, never a clinical performance.</li>" if synthetic is not False else "",
        "</ul>", banner, "</body></html>",
    ]
    return "\n".join(out)
