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


def test_detect_folder_batches_a_dynamic_batch_model_and_reports_images_per_second(tmp_path, capsys, caplog):
    """The fixture ONNX has a dynamic batch: a folder goes through in batches,
    every image gets its record (an unreadable one in the middle of a batch
    included), the log says how fast, and ``auto`` said what it picked."""
    import logging
    import shutil
    from pathlib import Path

    pytest.importorskip("onnxruntime")
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    images = tmp_path / "images"
    images.mkdir()
    names = [f"{i:02d}_{photo}" for i in range(5) for photo in ("astronaut.png", "chelsea.png")]
    for name in names:
        shutil.copy(fixtures / "images" / name[3:], images / name)
    (images / "03_broken.png").write_bytes(b"nope")
    with caplog.at_level(logging.INFO, logger="ssdkit"):
        code = main(["detect", str(fixtures / "models" / "ssdlite_mnv3_small_raw.onnx"), str(images), "--json",
                     "--threshold", "0.3"])
    stdout, _ = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == sorted(names)
    single = main(["detect", str(fixtures / "models" / "ssdlite_mnv3_small_raw.onnx"),
                   str(images / "00_astronaut.png"), "--json", "--threshold", "0.3", "--backend", "onnx"])
    alone = json.loads(capsys.readouterr()[0])
    assert single == 0 and len(alone["detections"]) == len(records[0]["detections"])
    for a, b in zip(alone["detections"], records[0]["detections"]):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-3
    messages = [r.getMessage() for r in caplog.records]
    assert any("images/s with" in m and "in batches of 8" in m for m in messages), messages
    assert any(m.startswith("backend auto: ") for m in messages)
