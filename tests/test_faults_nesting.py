"""The run directory's own JSON files (results.json, run.lock, the JSON-lines logs) nested deeper than Python's
recursion limit: read as unreadable, never a RecursionError traceback."""
import json
import logging

from crossmae.engine.logging import rewind_jsonl
from crossmae.engine.results import previous_metrics
from crossmae.engine.rundir import read_lock

DEEP = "[" * 100_000 + "]" * 100_000  # well-formed JSON; json.loads raises RecursionError on it


def test_a_deep_previous_results_json_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "results.json").write_text('{"task": "pretrain", "metrics": ' + DEEP + "}")
    with caplog.at_level(logging.WARNING, logger="crossmae"):
        assert previous_metrics(tmp_path / "results.json", "pretrain") == {}
    assert "nested more than" in caplog.text


def test_a_deep_lock_file_reads_as_unreadable(tmp_path):
    (tmp_path / "run.lock").write_text(DEEP)
    assert read_lock(tmp_path / "run.lock") is None


def test_a_deep_log_line_is_dropped_by_the_rewind(tmp_path):
    log = tmp_path / "train_log.jsonl"
    good = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2)]
    log.write_text("\n".join([good[0], '{"step": 3, "x": ' + DEEP + "}", good[1]]) + "\n")
    assert rewind_jsonl(log, "step", last=5) == 1
    assert log.read_text().splitlines() == good


def test_a_deep_coco_file_is_one_annotation_error(tmp_path):
    import pytest

    from det.coco import AnnotationError, read_coco
    ann = tmp_path / "instances_val2017.json"
    ann.write_text('{"images": ' + DEEP + ', "annotations": [], "categories": []}')
    with pytest.raises(AnnotationError, match="instances_val2017.json is not valid JSON: nested more than"):
        read_coco(ann)


def test_a_deep_seg_label_cache_is_ignored_and_rebuilt(tmp_path):
    import numpy as np
    from PIL import Image

    from seg.data import scan_label_values
    label = tmp_path / "a.png"
    Image.fromarray(np.array([[0, 3], [3, 7]], dtype=np.uint8)).save(label)
    cache = tmp_path / "cache.json"
    cache.write_text(DEEP)
    values = scan_label_values([label], cache)
    assert sorted(values[str(label)]) == [0, 3, 7]
    assert json.loads(cache.read_text())[str(label)][:2] == [label.stat().st_size, label.stat().st_mtime_ns]
