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
           left_cols: tuple[int, ...] = ()) -> str:
    """A table; the first ``left`` columns and those in ``left_cols`` (text) are left-aligned."""

    def is_left(i: int) -> bool:
        return i < left or i in left_cols or (i - len(head)) in left_cols

    ths = "".join(f'<th class="l">{h}</th>' if is_left(i) else f"<th>{h}</th>" for i, h in enumerate(head))
    body = []
    for r in rows:
        tds = "".join(f'<td class="l">{c}</td>' if is_left(i) else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    return (f'<div class="wrap"><table id="{tid}"><caption>{escape(caption)}</caption><thead><tr>{ths}</tr></thead>'
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


def _table3(data: dict[str, Any]) -> str:
    t3 = data["table3"]
    keys = t3["models"]
    cell: dict[tuple[str, str], str] = {}
    for pr in t3["pairs"]:
        if pr["z"] is None:
            txt = f'<span class="note">{escape(pr.get("note", "n/a"))}</span>'
        else:
            cls = ' class="sig"' if pr["p_value"] is not None and pr["p_value"] < 0.05 else ""
            txt = f"<span{cls}>Z={_n(pr['z'], 2)}<br>p={_p(pr['p_value'])}</span>"
        cell[(pr["a"], pr["b"])] = txt
    rows = []
    for a in keys:
        rows.append([escape(a)] + [cell.get((a, b), "") if a != b else "\u00b7" for b in keys])
    return _table("table3", "Table 3: paired DeLong tests on the test split (row model minus column model; "
                  "two-sided p; bold p<0.05)", ["Model"] + [escape(k) for k in keys], rows)


def _table4(data: dict[str, Any]) -> str:
    head = ["Model", "Split", "n", "Brier", "Cal. intercept", "Cal. slope", "Spiegelhalter z (p)",
            "Hosmer-Lemeshow \u03c7\u00b2 (df, p)", "Note"]
    rows = []
    for r in data["table4"]["rows"]:
        hl = r["hosmer_lemeshow"]
        hl_txt = f"{_n(hl['statistic'], 2)} ({hl['df']}, {_p(hl['p_value'])})" if hl else "\u2014"
        sz = "\u2014" if r["spiegelhalter_z"] is None else f"{_n(r['spiegelhalter_z'], 2)} ({_p(r['spiegelhalter_p'])})"
        rows.append([escape(r["model"]), r["split"], str(r["n"]), _n(r["brier"]), _n(r["calibration_intercept"]),
                     _n(r["calibration_slope"]), sz, hl_txt, escape(r.get("note", ""))])
    return _table("table4", "Table 4: calibration (Brier score; logistic recalibration as rms val.prob)", head, rows,
                  left=2, left_cols=(-1,))


def _external(data: dict[str, Any]) -> str:
    ext = data["external"]
    if not ext:
        return '<p class="note">No external validation split in the predictions.</p>'
    head = ["Model", "n test", "n external", "AUC test", "AUC external", "D", "df", "p"]
    rows = [[escape(r["model"]), str(r["n_test"]), str(r["n_external"]), _n(r["auc_test"]), _n(r["auc_external"]),
             _n(r["d"], 3), _n(r["df"], 2), _p(r["p_value"])] for r in ext["rows"]]
    return _table("table-external", "External validation: unpaired DeLong, internal test vs external", head, rows)


def _shap(data: dict[str, Any]) -> str:
    sh = data.get("shap") or {}
    if not sh.get("available"):
        return f'<p id="shap-unavailable" class="note">SHAP not available: {escape(sh.get("reason", "no SHAP input"))}.</p>'
    parts = []
    for i, e in enumerate(sh["entries"]):
        parts.append(f"<h3>{escape(e['model'])}</h3>")
        parts.append(f'<p class="note">{escape(e["method"])} explainer on {e["n_explained"]} rows'
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
        _table("table-counts", "Lesions per split", ["Split", "Lesions", "GIST", "Leiomyoma", "Patients"], counts),
        f'<p class="note">Patients with lesions in both train and test: {data["patients_in_train_and_test"]}.</p>',
        _table("table-thresholds", "Decision thresholds (positive iff P(GIST) \u2265 threshold)",
               ["Model", "Threshold", "Source"], thr, left_cols=(2,)),
        "<h2>Model</h2>", _provenance(data),
        "<h2>Table 2: performance</h2>",
    ]
    out += [_table2(data, s) for s in data["splits"]]
    if data.get("baseline_models"):
        out.append('<p class="note" id="baseline-note">Rows <code>baseline/*</code> are shortcut baselines, '
                   "lesion-level logistic regressions on DICOM header fields alone, on the pixels outside the "
                   "B-mode sector alone, and on the lesion's long axis alone. An image model that does not beat "
                   "them is not shown to read the lesion's appearance.</p>")
    out += [
        "<h2>Table 3: DeLong comparisons (test)</h2>", _table3(data), _img(figures.get("delong_test"), "DeLong p values"),
        "<h2>Table 4: calibration</h2>", _table4(data), _img(figures.get("brier"), "Brier scores"),
        "<h2>External validation</h2>", _external(data),
        "<h2>ROC curves</h2>", *[_img(figures.get(f"roc_{s}"), f"ROC {s}") for s in data["splits"]],
        "<h2>Calibration curves</h2>", *[_img(figures.get(f"calibration_{s}"), f"Calibration {s}") for s in data["splits"]],
        "<h2>Decision curves</h2>", *[_img(figures.get(f"decision_{s}"), f"Decision curve {s}") for s in data["splits"]],
        "<h2>SHAP: top features</h2>", _shap(data),
        "<h2>Methods</h2><ul class=\"note\">",
        "<li>AUC and its 95% CI: DeLong variance (fast midrank algorithm), normal interval clipped to [0, 1], "
        "as R pROC. Paired comparisons: DeLong Z; external: pROC's unpaired D with Welch-type df.</li>",
        f"<li>Proportions: {escape(data['table2']['ci_method'])} interval. Train rows are out-of-fold predictions.</li>",
        "<li>Calibration intercept/slope: logistic regression of the outcome on logit(P), as rms val.prob; "
        "calibration curves use quantile bins; decision curves: net benefit = TP/n \u2212 FP/n \u00b7 pt/(1\u2212pt).</li>",
        "</ul>", banner, "</body></html>",
    ]
    return "\n".join(out)
