"""iNat2019 / Places365 annotation files with wrong content are one error naming the file (and the entry or
line) when the dataset is built, and an unreadable validation image is found before training by the
header check every evaluation set gets (crossmae.classification.common.build_datasets)."""
from __future__ import annotations

import json

import pytest

from cls_transfer import INat2019, Places365Local

from .fakes import make_inat2019_tree, make_places365_tree


@pytest.mark.parametrize("section,field,value", [("annotations", "category_id", "three"),
                                                 ("annotations", "category_id", 2.5),
                                                 ("annotations", "category_id", True),
                                                 ("images", "file_name", 7)])
def test_inat2019_entries_of_the_wrong_type_name_the_file_and_entry(tmp_path, section, field, value):
    import re
    root = make_inat2019_tree(tmp_path, {3: 2, 500: 1})
    ann = root / "val2019.json"
    data = json.loads(ann.read_text())
    data[section][1][field] = value
    ann.write_text(json.dumps(data))
    entry = f"{section[:-1]} {data[section][1]['id']}"
    with pytest.raises(ValueError, match=rf"val2019\.json: {entry}: {field} {re.escape(repr(value))} is not"):
        INat2019(root, "val")


def test_inat2019_broken_json_names_the_file(tmp_path):
    root = make_inat2019_tree(tmp_path, {3: 1})
    (root / "val2019.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"val2019\.json is not valid JSON"):
        INat2019(root, "val")


@pytest.mark.parametrize("line,message", [
    ("Places365_val_00000001.jpg\n", "expected '<image> <class index>'"),
    ("Places365_val_00000001.jpg x\n", "expected '<image> <class index>'"),
    ("Places365_val_00000001.jpg 365\n", "class index 365 is not in 0..364"),
    ("Places365_val_00000001.jpg -1\n", "expected '<image> <class index>'"),
])
def test_places365_file_list_lines_are_checked(tmp_path, line, message):
    root = make_places365_tree(tmp_path, {0: 2, 1: 1})
    listing = root / "places365_val.txt"
    lines = listing.read_text().splitlines(keepends=True)
    lines[1] = line
    listing.write_text("".join(lines))
    with pytest.raises(ValueError, match=rf"places365_val\.txt, line 2: {message}"):
        Places365Local(root, "val", small=True, verify_md5=False)


def test_places365_categories_must_number_the_classes_0_to_n(tmp_path):
    root = make_places365_tree(tmp_path, {0: 1})
    cats = root / "categories_places365.txt"
    lines = cats.read_text().splitlines(keepends=True)
    lines[4] = lines[4].split()[0] + " 3\n"  # index 3 twice, 4 never
    cats.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"categories_places365\.txt: class indices must be 0\.\.364 once each"):
        Places365Local(root, "val", small=True, verify_md5=False)


@pytest.mark.parametrize("which", ["inat2019", "places365"])
def test_an_unreadable_val_image_is_found_by_the_header_check(tmp_path, which):
    from crossmae.data.image import ImageReadError
    if which == "inat2019":
        ds = INat2019(make_inat2019_tree(tmp_path, {3: 2, 500: 1}), "val")
        bad = ds.samples[1][0]
    else:
        ds = Places365Local(make_places365_tree(tmp_path, {0: 2, 1: 1}), "val", small=True, verify_md5=False)
        bad = ds.imgs[1][0]
    open(bad, "wb").close()
    with pytest.raises(ImageReadError, match=f"unreadable image {bad}"):
        ds.check_headers()


def test_inat2019_json_nested_too_deep_is_one_error(tmp_path):
    root = make_inat2019_tree(tmp_path, {3: 1})
    (root / "val2019.json").write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")  # RecursionError in json
    with pytest.raises(ValueError, match=r"val2019\.json is not valid JSON: nested more than"):
        INat2019(root, "val")
