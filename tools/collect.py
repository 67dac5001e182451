#!/usr/bin/env python
"""Collect every results.json under the given directories into the paper's tables (Markdown, CSV,
LaTeX) with the published numbers and deltas, and plot the training curves of every run.

    python tools/collect.py output/ --output-dir results/

The output directory must be new or empty; ``--overwrite`` replaces the files this tool writes there
(results.md, results.csv, results.tex, curves.png) and keeps every other file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python tools/<name>.py`: the checkout's root on sys.path (tools/_checkout.py)
    import _checkout  # noqa: F401

from crossmae.analysis import collect as C  # noqa: E402
from crossmae.cli import report_errors  # noqa: E402
from crossmae.files import atomic_write  # noqa: E402
from crossmae.userfiles import check_output_dir  # noqa: E402

TABLES = ("results.md", "results.csv", "results.tex")
WRITTEN = TABLES + ("curves.png",)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", help="directories searched recursively for results.json and training logs")
    p.add_argument("--output-dir", default="results", help="new or empty directory, unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help=f"write into a non-empty --output-dir: replace {', '.join(WRITTEN)}, keep every other file")
    p.add_argument("--references", default=str(C.REFERENCE_FILE), help="YAML of published numbers")
    p.add_argument("--no-curves", action="store_true")
    args = p.parse_args(argv)
    # a missing --references file, or an output dir that cannot be written: one line, not a traceback
    return report_errors("collect", run, args)


def run(args) -> None:
    out = Path(args.output_dir)
    replaced = check_output_dir(out, WRITTEN, args.overwrite)  # before the work: the user's files are safe
    tables, rows, problems = C.collect(args.roots, args.references)
    for name, text in zip(TABLES, (tables.markdown, tables.csv, tables.latex)):
        data = text.encode("utf-8")
        atomic_write(out / name, lambda f: f.write(data))
    print(tables.markdown)
    print(f"{len(rows)} pretrained checkpoints, {len(problems)} problems; wrote {', '.join(TABLES)} in {out}"
          + (f" (replaced {', '.join(replaced)})" if replaced else ""))
    if not args.no_curves:
        log_problems: list = []
        logs = C.find_logs(args.roots, log_problems)
        for problem in log_problems:
            print(problem)
        series = {_label(run, args.roots): C.curve_series(lg) for run, lg in logs.items()}
        series = {k: v for k, v in series.items() if v}
        if series:
            from crossmae.analysis.figures import curves_figure
            print(f"wrote {curves_figure(series, out / 'curves.png')} ({len(series)} runs)")
        else:
            print("no training logs found: no curves")


def _label(run: Path, roots: list[str]) -> str:
    for root in roots:
        try:
            rel = run.relative_to(Path(root).expanduser().resolve())
            return str(rel) if str(rel) != "." else run.name
        except ValueError:
            continue
    return run.name


if __name__ == "__main__":
    sys.exit(main())
