"""Collect ``results.json`` files into the paper's tables, and the training logs into curves.

Every training / evaluation run writes ``<output_dir>/results.json`` (crossmae.engine.logging.write_json):
``{"task", "dataset", "checkpoint", "metrics", ...}``; pretraining runs add ``model``, ``epochs``,
``mask_ratio``, ``pred_ratio``, ``decoder_depth``, ``decoder``. A downstream result joins the pretraining
run whose ``checkpoint`` it names (same resolved path); the table has one row per pretrained checkpoint
and one column per downstream benchmark, with the published reference numbers and the delta.
Nothing that cannot be read stops the table: corrupt or incomplete files and unfinished runs are
listed as problems.

rows         results.json files -> one row per pretrained checkpoint, and the problems found
references   the published numbers and the rows they apply to
paper_table  the table in Markdown, CSV and LaTeX
curves       training curves from the runs' logs

The names below are what tools/collect.py and tools/analyze_attention.py read as ``collect.<name>``.
"""
from __future__ import annotations

from .curves import curve_series, find_logs
from .paper_table import Tables, collect, make_tables
from .references import REFERENCE_FILE, load_references, matches, references_for
from .rows import (COLUMNS, DOWNSTREAM_TASKS, LOG_FILES, SIZE_NAMES, TASK_METRICS, Column, Problem, Row, build_rows,
                   columns_for, norm_name, pretrain_row, read_jsonl, read_model_kwargs, read_results, scan)

__all__ = ["COLUMNS", "DOWNSTREAM_TASKS", "LOG_FILES", "REFERENCE_FILE", "SIZE_NAMES", "TASK_METRICS", "Column",
           "Problem", "Row", "Tables", "build_rows", "collect", "columns_for", "curve_series", "find_logs",
           "load_references", "make_tables", "matches", "norm_name", "pretrain_row", "read_jsonl",
           "read_model_kwargs", "read_results", "references_for", "scan"]
