"""ARO loaders on tiny fixtures in the published formats (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infodecomp.probes import load_aro
from tests.fixtures import write_aro_sets


@pytest.fixture(scope="module")
def aro(tmp_path_factory) -> Path:
    return write_aro_sets(tmp_path_factory.mktemp("aro"))


def test_vg_sets(aro: Path) -> None:
    rel = load_aro("vg-relation", aro / "vg")
    assert len(rel) == 6 and rel[0].captions == ("a red circle left of a blue square",
                                                 "a blue square left of a red circle")
    assert rel[0].group == "left of" and rel[0].box == (5, 3, 40, 40)
    img = rel[0].load_image()
    assert img.size == (40, 40) and img.mode == "RGB"  # cropped to the box
    assert rel[0].load_image(16).size == (16, 16)
    att = load_aro("vg-attribution", aro / "vg", limit=2)
    assert len(att) == 2 and att[0].group == "red_blue"


def test_order_sets_perturb_word_order(aro: Path) -> None:
    items = load_aro("coco-order", aro / "coco")
    assert len(items) == 12  # two captions per image
    first = items[0]
    assert first.captions[0] == "a red circle left of a blue square"  # lower-cased, final period dropped
    assert len(first.captions) == 4
    for false in first.captions[1:]:
        assert sorted(false.split()) == sorted(first.captions[0].split()) and false != first.captions[0]
    assert load_aro("coco-order", aro / "coco", seed=0)[0] == first  # seeded


def test_bad_files_are_named(aro: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown ARO set 'vg-objects'"):
        load_aro("vg-objects", aro / "vg")
    with pytest.raises(ValueError, match="annotation file not found"):
        load_aro("flickr-order", aro / "coco")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "visual_genome_relation.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_aro("vg-relation", bad)
    (bad / "visual_genome_relation.json").write_text(json.dumps([{"image_path": "x.jpg"}]))
    with pytest.raises(ValueError, match="item 0 lacks"):
        load_aro("vg-relation", bad)
    (bad / "images").mkdir()
    (bad / "images" / "x.jpg").write_text("not an image")
    item = {"image_path": "x.jpg", "bbox_x": 0, "bbox_y": 0, "bbox_w": 4, "bbox_h": 4, "true_caption": "a",
            "false_caption": "b"}
    (bad / "visual_genome_relation.json").write_text(json.dumps([item, {**item, "image_path": "gone.jpg"}]))
    items = load_aro("vg-relation", bad)
    with pytest.raises(ValueError, match="cannot read image .*x.jpg"):
        items[0].load_image()
    with pytest.raises(ValueError, match="image not found: .*gone.jpg"):
        items[1].load_image()
