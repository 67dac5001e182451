"""The paper-shaped results table (Markdown, CSV, LaTeX): our numbers beside the published ones, with deltas."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..tables import csv_table, fmt, latex_table, markdown_table
from .references import REFERENCE_FILE, load_references, references_for
from .rows import COLUMNS, Problem, Row, build_rows, scan

logger = logging.getLogger("crossmae")


@dataclass
class Tables:
    markdown: str
    csv: str
    latex: str


def _cell(row: Row, key: str, refs: dict) -> tuple[str | None, dict | None, float | None]:
    """(text, primary reference, delta) for one cell: "ours (ref, delta)", "(ref)" or blank."""
    ours = row.values.get(key)
    matched = references_for(row, key, refs) if key in [c.key for c in COLUMNS] else []
    ref = matched[0] if matched else None
    delta = ours - ref["value"] if ours is not None and ref else None
    if ours is None and ref is None:
        return None, None, None
    if ref is None:
        return f"{ours:.2f}", None, None
    if ours is None:
        return f"({ref['value']:g})", ref, None
    return f"{ours:.2f} ({ref['value']:g}, {delta:+.2f})", ref, delta


def make_tables(rows: list[Row], extra: list[str], problems: list[Problem], refs: dict) -> Tables:
    keys = [c.key for c in COLUMNS] + extra
    titles = [c.title for c in COLUMNS] + extra
    info_headers = ["checkpoint", "method", "size", "epochs", "mask", "pred", "dec. depth"]
    info = lambda r: [r.label, r.method_label, r.size_label, r.epochs, fmt(r.mask_ratio, 2),  # noqa: E731
                      fmt(r.pred_ratio, 2), r.decoder_depth]
    md_rows, used_sources = [], {}
    for r in rows:
        cells = []
        for k in keys:
            text, ref, _ = _cell(r, k, refs)
            cells.append(text)
            if ref:
                used_sources.setdefault(ref["source"], None)
        md_rows.append(info(r) + cells)
    legend = ("Cells: ours (published reference, ours - reference); a reference alone in parentheses is a "
              "result not collected yet; blank: no result and no published number for this configuration.")
    md = ["# Results", "", legend, "", markdown_table(info_headers + titles, md_rows), ""]
    if used_sources:
        md += ["References: " + ", ".join(used_sources) + " (crossmae/analysis/reference_numbers.yaml).", ""]
    if problems:
        md += ["## Not in the table", ""] + [f"- {p}" for p in problems] + [""]
    csv_headers = info_headers + ["checkpoint_path"]
    for k in keys:
        csv_headers += [k, f"{k}_ref", f"{k}_ref_source", f"{k}_delta", f"{k}_all_refs", f"{k}_file"]
    csv_rows = []
    for r in rows:
        line = info(r) + [r.checkpoint]
        for k in keys:
            ours = r.values.get(k)
            matched = references_for(r, k, refs) if k in [c.key for c in COLUMNS] else []
            ref = matched[0] if matched else None
            line += [fmt(ours, 3), ref["value"] if ref else None, ref["source"] if ref else None,
                     fmt(ours - ref["value"], 3) if ours is not None and ref else None,
                     "; ".join(f"{m['source']}={m['value']:g}" for m in matched) or None, r.sources.get(k)]
        csv_rows.append(line)
    latex = latex_table(info_headers + titles, md_rows, caption=legend, align="l" * len(info_headers) + "c" * len(keys))
    return Tables("\n".join(md), csv_table(csv_headers, csv_rows), latex)


def collect(roots: list[str | Path],
            reference_file: str | Path = REFERENCE_FILE) -> tuple[Tables, list[Row], list[Problem]]:
    found, problems = scan(roots)
    rows, extra = build_rows(found, problems)
    skipped = sum(p.kind in ("corrupt", "invalid") for p in problems)
    if skipped:
        logger.warning("%d unreadable, cut-short or invalid files skipped (listed under 'Not in the table')", skipped)
    return make_tables(rows, extra, problems, load_references(reference_file)), rows, problems
