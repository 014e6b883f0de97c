"""`ssdkit detect` on real files: JSON records, annotated images, unreadable inputs."""
import json

import numpy as np
import pytest

from ssdkit.cli import main


@pytest.fixture(scope="module")
def model(tiny_tflite):
    return tiny_tflite(quant="fp32", score_threshold=0.0)


def test_detect_folder_with_json_and_annotations(model, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(images / name)
    (images / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "out"
    code = main(["detect", str(model), str(images), "--json", "--threshold", "0", "--out", str(out), "--device", "rpi4"])
    stdout, stderr = capsys.readouterr()
    assert code == 1  # one image could not be read
    assert "broken.jpg: skipped" in stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [r["image"].split("/")[-1] for r in records] == ["a.jpg", "b.png"]
    for record in records:
        assert record["detections"] and set(record["timings_ms"]) == {"preprocess", "inference", "postprocess"}
        ymin, xmin, ymax, xmax = record["detections"][0]["box"]
        assert 0 <= ymin <= ymax <= 60 and 0 <= xmin <= xmax <= 80
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "detections.jsonl"]
    assert Image.open(out / "a.jpg").size == (80, 60)


def test_detect_bad_model_is_exit_2(tmp_path, capsys):
    bogus = tmp_path / "x.tflite"
    bogus.write_bytes(b"not a model")
    image = tmp_path / "i.png"
    image.write_bytes(b"")
    assert main(["detect", str(bogus), str(image)]) == 2
    assert "x.tflite: not a model this TFLite interpreter can run" in capsys.readouterr().err


def _photos(folder, names=("a.jpg", "b.png"), seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.parametrize("where", ["folder", "file", "dot"])
def test_out_that_holds_the_inputs_is_refused_and_nothing_changes(tmp_path, capsys, monkeypatch, where):
    """The originals are never replaced by annotated copies (the model is not even opened)."""
    photos = tmp_path / "photos"
    before = _photos(photos)
    images, out = {"folder": (photos, photos), "file": (photos / "a.jpg", photos),
                   "dot": ("a.jpg", ".")}[where]
    if where == "dot":
        monkeypatch.chdir(photos)
    assert main(["detect", str(tmp_path / "no_model.tflite"), str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ssdkit detect: error: --out {out} is the folder of the input images: the annotated copies "
                   "would replace them; choose another folder")
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_out_never_replaces_a_file_an_earlier_run_did_not_write(tmp_path, capsys):
    before = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"the user's own a.jpg")
    assert main(["detect", str(tmp_path / "no_model.tflite"), str(tmp_path / "photos"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ssdkit detect: error: --out {out}: a.jpg is there and was not written by ssdkit detect (it is not in "
        f"{out / 'detections.jsonl'}); remove it or choose another folder")
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg"] and (out / "a.jpg").read_bytes() == b"the user's own a.jpg"
    assert {p.name: p.read_bytes() for p in (tmp_path / "photos").iterdir()} == before


def test_a_rerun_into_the_same_out_replaces_its_own_outputs_without_compounding(model, tmp_path, capsys):
    photos = tmp_path / "photos"
    before = _photos(photos)
    (photos / "sub").mkdir()
    out = tmp_path / "out"
    argv = ["detect", str(model), str(photos), "--threshold", "0", "--out", str(out)]
    assert main(argv) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    err = capsys.readouterr().err
    assert f"ssdkit detect: warning: {photos}: 1 subfolder not searched (sub): ssdkit detect reads the images directly in the folder" in err
    assert main(argv) == 0  # the same inputs, the same annotated copies: nothing drawn on top
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".jsonl"} == \
        {name: data for name, data in first.items() if not name.endswith(".jsonl")}
    assert {p.name: p.read_bytes() for p in photos.iterdir() if p.is_file()} == before


def test_without_opencv_pillow_reads_and_annotates(model, tmp_path, monkeypatch, capsys):
    """A device with Pillow only (Raspberry Pi OS without python3-opencv)."""
    from PIL import Image

    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # what `import cv2` meets without the package
    photos = tmp_path / "photos"
    before = _photos(photos, names=("a.png",))
    out = tmp_path / "out"
    assert main(["detect", str(model), str(photos), "--threshold", "0", "--out", str(out)]) == 0
    annotated = np.asarray(Image.open(out / "a.png").convert("RGB"))
    original = np.asarray(Image.open(photos / "a.png").convert("RGB"))
    assert annotated.shape == original.shape and (annotated != original).any()  # boxes and labels drawn
    assert (photos / "a.png").read_bytes() == before["a.png"]
    assert "1 images" in capsys.readouterr().err
