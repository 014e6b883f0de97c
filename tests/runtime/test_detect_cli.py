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
