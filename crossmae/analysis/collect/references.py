"""The published numbers (reference_numbers.yaml) and which of them apply to a row."""
from __future__ import annotations

from pathlib import Path

import yaml

from ...userfiles import parse_yaml
from .rows import SIZE_NAMES, Row

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "reference_numbers.yaml"


def load_references(path: str | Path = REFERENCE_FILE) -> dict:
    try:
        data = parse_yaml(Path(path).read_text())
    except (ValueError, yaml.YAMLError) as e:  # ValueError: NestingError
        raise ValueError(f"{path}: not readable YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path}: expected a mapping with a 'results' list")
    return data


def matches(record: dict, row: Row) -> bool:
    """Whether a published number applies to a row (see reference_numbers.yaml)."""
    if row.method is None or row.size not in SIZE_NAMES:
        return False
    checks = {"method": row.method, "size": row.size, "epochs": row.epochs, "decoder_depth": row.decoder_depth}
    for key, value in checks.items():
        if key in record and record[key] != value:
            return False
    if "pred_ratio" in record and (row.pred_ratio is None or abs(record["pred_ratio"] - row.pred_ratio) > 1e-6):
        return False
    if row.mask_ratio is None or abs(record.get("mask_ratio", 0.75) - row.mask_ratio) > 1e-6:
        return False
    return record.get("resolution", 224) == (row.resolution or 224)


def references_for(row: Row, column: str, refs: dict) -> list[dict]:
    return [r for r in refs["results"] if r["column"] == column and matches(r, row)]
