"""Pascal VOC reader: same records as COCO, errors that name the XML file and object."""
import json
import re

import numpy as np
import pytest

from ssdkit.datasets.records import AnnotationError
from ssdkit.datasets.coco import read_coco
from ssdkit.datasets.reader import read_dataset
from ssdkit.calibration.representative import representative_images
from ssdkit.datasets.voc import BOX_FIELDS, read_voc


def _xml(filename, objects, size=(60, 40)):
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, box, difficult in objects:
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in zip(BOX_FIELDS, box))
        parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                     f"<difficult>{int(difficult)}</difficult><bndbox>{fields}</bndbox></object>")
    return "".join(parts) + "</annotation>"


def _annotate(root, stem, objects, **kwargs):
    (root / "Annotations" / f"{stem}.xml").write_text(_xml(f"{stem}.jpg", objects, **kwargs))


@pytest.fixture
def voc(tmp_path):
    from PIL import Image

    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
    _annotate(root, "a", [("dog", (7, 5, 36, 24), False)])
    _annotate(root, "b", [("cat", (1, 1, 10, 10), True), ("dog", (31, 21, 60, 40), False)])
    return root


def _split(root, name, ids):
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root / "ImageSets" / "Main" / f"{name}.txt"


def test_boxes_match_coco_for_the_same_pixels(voc):
    dataset = read_voc(voc)
    assert dataset.labels == ("cat", "dog") and dataset.skipped == 0
    a, b = dataset.records
    assert a.path == voc / "JPEGImages" / "a.jpg" and (a.height, a.width) == (40, 60)
    np.testing.assert_allclose(a.boxes, [[0.1, 0.1, 0.6, 0.6]])  # 1-based 7..36 is [6, 36) in COCO pixels
    np.testing.assert_allclose(b.boxes, [[0, 0, 0.25, 10 / 60], [0.5, 0.5, 1, 1]])
    assert list(a.classes) == [1] and list(b.classes) == [0, 1]
    (voc / "JPEGImages" / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [6, 4, 30, 20]}],
        "categories": [{"id": 1, "name": "dog"}]}))
    np.testing.assert_array_equal(read_coco(voc / "JPEGImages" / "ann.json").records[0].boxes, a.boxes)


def test_difficult_objects_are_ignored_unless_included(voc):
    assert [list(r.crowd) for r in read_voc(voc).records] == [[False], [True, False]]
    assert [list(r.crowd) for r in read_voc(voc, include_difficult=True).records] == [[False], [False, False]]


def test_class_mapping_follows_the_given_labels(voc):
    dataset = read_voc(voc, labels=("dog", "cat", "person"))
    assert dataset.labels == ("dog", "cat", "person")
    assert [list(r.classes) for r in dataset.records] == [[0], [1, 0]]


def test_split_files_choose_the_records(voc):
    _split(voc, "train", ["a"])
    _split(voc, "val", ["b"])
    assert [r.path.name for r in read_voc(voc, split="train").records] == ["a.jpg"]
    assert [r.path.name for r in read_voc(voc, split="val").records] == ["b.jpg"]
    assert read_voc(voc, split="train").labels == ("dog",)  # classes found in that split
    assert len(read_voc(voc, split=None).records) == 2
    with pytest.raises(AnnotationError, match=re.escape(
            f"{voc}/ImageSets/Main/trainval.txt: no split 'trainval' in this VOC dataset (splits found: train, val)")):
        read_voc(voc)
    _split(voc, "trainval", ["a", "b", "c"])
    with pytest.raises(AnnotationError, match=re.escape(f"{voc}/Annotations/c.xml: cannot read annotation file")):
        read_voc(voc)


def _broken_cases():
    def remove_image(root):
        (root / "JPEGImages" / "a.jpg").unlink()

    def malformed(root):
        (root / "Annotations" / "a.xml").write_text("<annotation><filename>a.jpg</annotation>")

    def annotate(objects, **kwargs):
        return lambda root: _annotate(root, "a", objects, **kwargs)

    return [
        (remove_image, {}, "image file {root}/JPEGImages/a.jpg is missing"),
        (malformed, {}, "malformed XML (mismatched tag: line 1, column 29)"),
        (annotate([("dog", (7, 5, 36), False)]), {}, "object 1 (dog): bndbox ymax is missing or not a number (None)"),
        (annotate([("dog", (7, "x", 36, 24), False)]), {}, "object 1 (dog): bndbox ymin is missing or not a number ('x')"),
        (annotate([("dog", (7, 5, 36, 24), False), ("dog", (7, 5, 61, 24), False)]), {},
         "object 2 (dog): box xmin=7 ymin=5 xmax=61 ymax=24 is outside the 60x40 image"),
        (annotate([("dog", (30, 5, 20, 24), False)]), {}, "object 1 (dog): box xmin=30 ymin=5 xmax=20 ymax=24 is empty"),
        (annotate([("cow", (7, 5, 36, 24), False)]), {"labels": ("cat", "dog")},
         "object 1 (cow): unknown class (labels: cat, dog)"),
        (annotate([("dog", (7, 5, 36, 24), False)], size=(64, 40)), {}, "<size> says 64x40 but a.jpg is 60x40"),
    ]


@pytest.mark.parametrize("break_it, kwargs, message", _broken_cases())
def test_broken_records_raise_naming_the_file_or_are_skipped_with_a_warning(voc, break_it, kwargs, message):
    break_it(voc)
    expected = f"{voc}/Annotations/a.xml: " + message.format(root=voc)
    with pytest.raises(AnnotationError) as error:
        read_voc(voc, **kwargs)
    assert str(error.value) == expected
    with pytest.warns(UserWarning) as caught:
        dataset = read_voc(voc, skip_broken=True, **kwargs)
    messages = [str(w.message) for w in caught]
    assert messages == [f"{expected}; skipped", f"{voc}: skipped 1 of 2 images with broken annotations"]
    assert [r.path.name for r in dataset.records] == ["b.jpg"] and dataset.skipped == 1


def test_read_dataset_dispatches_on_what_the_path_is(voc, tmp_path):
    assert read_dataset(voc).source == voc
    val = _split(voc, "val", ["b"])
    assert [r.path.name for r in read_dataset(val, labels=("cat", "dog")).records] == ["b.jpg"]
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    assert read_dataset(coco).labels == ("x",)
    with pytest.raises(AnnotationError, match=re.escape(
            f"{voc / 'JPEGImages'}: not a dataset; expected a COCO JSON file, a Pascal VOC folder")):
        read_dataset(voc / "JPEGImages")
    with pytest.raises(FileNotFoundError, match="nowhere: dataset not found"):
        read_dataset(tmp_path / "nowhere")


def test_a_voc_folder_is_a_calibration_source(voc):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(voc / "JPEGImages" / "unlabelled.jpg")
    images = representative_images(voc, count=2)
    assert len(images) == 2 and all(i.shape == (40, 60, 3) and i.dtype == np.uint8 for i in images)
    with pytest.warns(UserWarning, match="only 3 calibration images"):  # without Annotations/: every image
        assert len(representative_images(voc / "JPEGImages", count=5)) == 3
    _annotate(voc, "a", [("dog", (7, 5, 61, 24), False)])
    with pytest.warns(UserWarning) as caught:
        assert len(representative_images(voc, count=1)) == 1
    assert any("a.xml: object 1 (dog): box" in str(w.message) and "skipped" in str(w.message) for w in caught)
