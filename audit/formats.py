"""Render query results as an aligned text table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["FORMATS", "interval", "render_rows", "render_stats", "render", "with_intervals"]

FORMATS = ("table", "csv", "json")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def interval(estimate: float | None, lower: float | None, upper: float | None) -> str:
    """``0.81 (95% CI 0.70–0.90)``; the estimate alone when there is no interval, ``""`` when
    there is no estimate."""
    if estimate is None:
        return ""
    if lower is None or upper is None:
        return f"{estimate:.2f}"
    return f"{estimate:.2f} (95% CI {lower:.2f}\u2013{upper:.2f})"


def with_intervals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for people (table, CSV): each estimate with a confidence interval becomes one text
    cell, ``name`` + ``name_ci`` ([lower, upper]) or ``name_ci_lower``/``name_ci_upper`` -> ``name``.
    JSON keeps the numbers."""
    out = []
    for row in rows:
        new = dict(row)
        for key in row:
            if f"{key}_ci" in row:
                ci = row[f"{key}_ci"] or [None, None]
                new[key] = interval(row[key], ci[0], ci[1])
                new.pop(f"{key}_ci")
            elif f"{key}_ci_lower" in row and f"{key}_ci_upper" in row:
                new[key] = interval(row[key], row[f"{key}_ci_lower"], row[f"{key}_ci_upper"])
                new.pop(f"{key}_ci_lower")
                new.pop(f"{key}_ci_upper")
        out.append(new)
    return out


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def render_rows(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """Render a list of flat dicts; columns are the union of keys in first-seen order."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, sort_keys=False, default=str)
    columns = _columns(rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not rows:
        return "(no rows)"
    cells = [[_cell(row.get(k)) for k in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def render_stats(result: dict[str, Any], fmt: str) -> str:
    """Render the ``stats`` result: sections of key/value rows (CSV: one block per section)."""
    if fmt == "json":
        return json.dumps(result, indent=2, default=str)
    volumes = result["volumes"]
    volume_rows = [{"metric": "studies", "value": volumes["studies"]}]
    volume_rows += [{"metric": f"studies[{k}]", "value": v}
                    for k, v in sorted(volumes["studies_by_state"].items())]
    volume_rows += [{"metric": f"instances[{k}]", "value": v}
                    for k, v in sorted(volumes["instances_by_status"].items())]
    volume_rows += [{"metric": k, "value": volumes[k]}
                    for k in ("associations_accepted", "associations_rejected", "analyses")]
    outbox_rows = [{"metric": f"outbox_{k}", "value": v} for k, v in result["outbox"].items()]
    sections = [("volumes", volume_rows), ("failures", result["failures"]),
                ("latency (seconds per stage)", result["latency"]), ("outbox", outbox_rows)]
    parts = []
    for title, rows in sections:
        body = render_rows(rows, fmt)
        parts.append(f"# {title}\n{body}")
    return "\n\n".join(parts)


def render(result: Any, fmt: str) -> str:
    """Dispatch on the result's shape (stats dict or list of rows)."""
    if isinstance(result, dict) and "volumes" in result:
        return render_stats(result, fmt)
    if isinstance(result, dict):
        return json.dumps(result, indent=2, default=str) if fmt == "json" else \
            render_rows([result], fmt)
    return render_rows(result, fmt)
