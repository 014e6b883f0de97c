"""COCO reader errors name the file and the record; the synthetic data is deterministic."""
import json
import re

import numpy as np
import pytest

from ssdkit.datasets.records import AnnotationError
from ssdkit.datasets.coco import read_coco
from ssdkit.calibration.representative import representative_images
from ssdkit.datasets.synth import LABELS, generate, render


@pytest.fixture
def coco(tmp_path):
    from PIL import Image

    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / name)
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60},
                   {"id": 2, "file_name": "b.jpg", "height": 40, "width": 60}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [6, 4, 30, 20], "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    return tmp_path, data


def _write(path, data):
    (path / "ann.json").write_text(json.dumps(data))
    return path / "ann.json"


def test_reads_boxes_classes_and_crowd(coco):
    root, data = coco
    dataset = read_coco(_write(root, data))
    assert dataset.labels == ("cat", "dog")
    first, second = dataset.records
    np.testing.assert_allclose(first.boxes, [[0.1, 0.1, 0.6, 0.6]])
    assert list(first.classes) == [1] and list(second.crowd) == [True]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"][1].update(file_name="missing.jpg"), r"image id 2 \(missing.jpg\): image file .* is missing"),
    (lambda d: d["annotations"][0].update(bbox=[50, 4, 30, 20]), r"image id 1 \(a.jpg\): annotation 1 box .* outside the 60x40 image"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2]), r"image id 1 \(a.jpg\): annotation 1 has a malformed bbox"),
    (lambda d: d["annotations"][0].update(bbox=[6, 4, float("nan"), 20]), r"image id 1 \(a.jpg\): annotation 1 has a malformed bbox"),
    (lambda d: d["images"][0].update(height="40"), r"image id 1 \(a.jpg\): height '40' and width 60 must be positive integers"),
])
def test_broken_records_raise_or_are_skipped_with_a_warning(coco, change, message):
    root, data = coco
    change(data)
    path = _write(root, data)
    with pytest.raises(AnnotationError, match=f"ann.json: {message}"):
        read_coco(path)
    with pytest.warns(UserWarning) as caught:
        dataset = read_coco(path, on_error="skip")
    assert len(dataset.records) == 1 and dataset.skipped == 1
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and re.search(message, messages[0])
    assert "skipped 1 of 2 images" in messages[1]  # one warning per image, then the count


def test_classes_are_in_category_id_order_not_name_order(coco):
    root, data = coco
    data["categories"] = [{"id": 7, "name": "ant"}, {"id": 3, "name": "zebra"}]
    dataset = read_coco(_write(root, data))
    assert dataset.labels == ("zebra", "ant")  # ids 3, 7; as README.md says
    assert list(dataset.records[0].classes) == [1]  # category 7


def test_a_category_outside_the_given_labels_is_a_broken_record(coco):
    root, data = coco
    path = _write(root, data)
    with pytest.raises(AnnotationError, match=r"image id 1 \(a.jpg\): annotation 1 has category 'dog', which is not "
                                              "among the classes asked for"):
        read_coco(path, labels=("cat",))
    with pytest.warns(UserWarning) as caught:
        assert len(read_coco(path, labels=("cat",), on_error="skip").records) == 1
    assert [str(w.message).split(": ")[-1] for w in caught] == [
        "annotation 1 has category 'dog', which is not among the classes asked for; skipped",
        "skipped 1 of 2 images with broken annotations"]


@pytest.mark.parametrize("change, message", [
    # Two images sharing an id would each get the other's boxes (and the error would name the wrong one).
    (lambda d: d["images"][1].update(id=1), "image id 1 is used twice (entries 1 and 2); ids must be unique"),
    (lambda d: d["categories"][1].update(id=3), "category id 3 is used twice (entries 1 and 2)"),
    (lambda d: d["annotations"][1].update(id=1), "annotation id 1 is used twice (entries 1 and 2)"),
    (lambda d: d["categories"][1].update(name="cat"), "categories 3 and 7 are both named 'cat'; names must be unique"),
    (lambda d: d["annotations"][1].update(image_id=9), "annotation 2 is for image id 9, which is not in 'images'"),
    (lambda d: d["annotations"][0].update(category_id=99), "annotation 1 has category id 99, which is not in 'categories'"),
    (lambda d: d["images"][0].pop("id"), "image 1 has id None, expected an integer"),
    (lambda d: d.update(images={"id": 1}), "'images' must be a list of objects"),
])
def test_structural_errors_name_the_problem_and_are_not_skipped(coco, change, message):
    root, data = coco
    change(data)
    path = _write(root, data)
    for on_error in ("raise", "skip"):
        with pytest.raises(AnnotationError) as error:
            read_coco(path, on_error=on_error)
        assert str(error.value).startswith(f"{path}: {message}") and "\n" not in str(error.value)


def test_synthetic_dataset_is_deterministic_and_varied(tmp_path):
    a = generate(tmp_path / "a", 12, seed=3, size=128)
    b = generate(tmp_path / "b", 12, seed=3, size=128)
    c = generate(tmp_path / "c", 12, seed=4, size=128)
    assert (a / "annotations.json").read_bytes() == (b / "annotations.json").read_bytes()
    assert (a / "images" / "000005.jpg").read_bytes() == (b / "images" / "000005.jpg").read_bytes()
    assert (a / "images" / "000005.jpg").read_bytes() != (c / "images" / "000005.jpg").read_bytes()
    dataset = read_coco(a / "annotations.json")
    assert dataset.labels == LABELS and len(LABELS) >= 4
    sides = []
    for i in range(200):
        _, boxes, classes = render(5, i, 128)
        assert ((boxes >= 0) & (boxes <= 1)).all()
        sides += list(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    assert min(sides) < 0.08 and max(sides) > 0.55


def test_representative_images_from_a_folder_with_a_broken_file(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), i * 50, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    with pytest.warns(UserWarning) as caught:
        images = representative_images(tmp_path, count=10)
    messages = [str(w.message) for w in caught]
    assert any("bad.jpg: cannot read image" in m for m in messages)
    assert any("only 3 calibration images, 10 asked for" in m for m in messages)
    assert len(images) == 3 and images[0].shape == (20, 30, 3)


def test_representative_frames_from_a_real_video(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), (i * 8, 0, 255 - i * 8), np.uint8))
    writer.release()
    with pytest.warns(UserWarning, match="only 3 calibration images, 5 asked for"):
        frames = representative_images(path, count=5, every_nth=10)
    assert len(frames) == 3  # frames 0, 10, 20
    assert frames[0].shape == (48, 64, 3)
    assert frames[0][0, 0, 0] > 200 and frames[0][0, 0, 2] < 50  # BGR (0, 0, 255) is red: RGB (255, 0, 0)


def test_data_synth_command(tmp_path, capsys):
    from ssdkit.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--n", "3", "--seed", "0", "--size", "64"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "s" / "annotations.json")
    assert len(read_coco(tmp_path / "s" / "annotations.json").records) == 3
