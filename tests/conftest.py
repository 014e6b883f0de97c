"""Fixtures shared across test folders."""
import pytest


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory):
    """``tiny_tflite(**TFLiteOptions fields)`` -> path of the tiny test network
    (untrained ssd_mnv2, width 0.35, 96x96, labels a and b) exported as TFLite
    with those options (``layer_errors=True``: the export option of that
    name, node data for ssdkit explore); each variant is exported once per session."""
    pytest.importorskip("tensorflow")
    from ssdkit.convert.export import ExportOptions, export
    from ssdkit.convert.checkpoint import prepare_model
    from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions

    exported = {}

    def tflite(**options):
        key = tuple(sorted(options.items()))
        if key not in exported:
            with pytest.warns(UserWarning, match="untrained"):
                model = prepare_model("ssd_mnv2", width=0.35, input_size=(96, 96), labels=("a", "b"),
                                      backbone_weights="none")
            out = tmp_path_factory.mktemp("tiny")
            options = dict(options)
            layer_errors = options.pop("layer_errors", False)
            exported[key] = export(model, "tflite", out, ExportOptions(tflite=TFLiteOptions(**options),
                                                                       layer_errors=layer_errors))[-1]
        return exported[key]

    return tflite


@pytest.fixture(scope="session")
def shapes_tflite(tmp_path_factory):
    """The shipped ssd_mnv2 demo weights (trained on the synthetic shapes)
    exported once per session as fp32 TFLite: a detector that really finds
    the shapes, for tests that need true detections (tracking, zones, events)."""
    pytest.importorskip("tensorflow")
    from ssdkit.convert.checkpoint import prepare_model, resolve_weights
    from ssdkit.convert.export import ExportOptions, export
    from ssdkit.convert.tflite.savedmodel2tflite import TFLiteOptions

    model = prepare_model("ssd_mnv2", resolve_weights("ssd_mnv2", "auto", customised=False))
    out = tmp_path_factory.mktemp("shapes")
    return export(model, "tflite", out, ExportOptions(tflite=TFLiteOptions(quant="fp32")))[-1]


@pytest.fixture(scope="session")
def mqtt_broker_tool():
    """tools/mqtt_broker.py (a real MQTT broker, amqtt, on 127.0.0.1) as a module."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("paho.mqtt")
    pytest.importorskip("amqtt")
    path = Path(__file__).resolve().parents[1] / "tools" / "mqtt_broker.py"
    spec = importlib.util.spec_from_file_location("ssdkit_tools_mqtt_broker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
@pytest.fixture(scope="session", autouse=True)
def backend_choice_cache(tmp_path_factory):
    """``backend="auto"`` (the CLI default) caches what it measured; the
    tests keep that cache in a temporary file, not in ~/.cache/ssdkit."""
    import os

    path = tmp_path_factory.mktemp("choices") / "backend_choices.json"
    before = os.environ.get("SSDKIT_BACKEND_CHOICES")
    os.environ["SSDKIT_BACKEND_CHOICES"] = str(path)
    yield path
    if before is None:
        os.environ.pop("SSDKIT_BACKEND_CHOICES", None)
    else:
        os.environ["SSDKIT_BACKEND_CHOICES"] = before


# Runs ``ssdkit.cli.main`` on each argv in one new Python process and reports,
# for each, the exit code, stderr and which heavy modules were imported by then.
# TensorFlow itself is never let in: a command that gets that far fails at
# once (and is reported) instead of running an export or a training.
_FRESH_CLI = r"""
import contextlib, io, json, sys
HEAVY = ("tensorflow", "tf_keras", "keras", "tf2onnx", "onnx", "onnxruntime", "cv2", "pycocotools", "PIL")
BLOCKED = ("tensorflow", "tf_keras", "keras")
attempted = set()

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempted.add(name.split(".")[0])
            raise ImportError(f"test: {name} is blocked")

sys.meta_path.insert(0, Block())
from ssdkit.cli import main
results = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = f"raised {exc!r}"
    loaded = {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
    results.append({"argv": argv, "code": code, "stderr": err.getvalue(),
                    "heavy": sorted((loaded & set(HEAVY)) | attempted)})
print(json.dumps(results))
"""


@pytest.fixture(scope="session")
def cli_in_fresh_process():
    """``run(argvs, cwd) -> [{"argv", "code", "stderr", "heavy"}]``: ``ssdkit``
    on each argv in turn, in one fresh interpreter in folder ``cwd``, so
    ``heavy`` (the heavy modules imported, or tried, by the time each
    returned) means something even when this test process has TensorFlow
    loaded already."""
    import json
    import subprocess
    import sys

    def run(argvs: list[list[str]], cwd) -> list[dict]:
        result = subprocess.run([sys.executable, "-c", _FRESH_CLI], input=json.dumps(argvs), capture_output=True,
                                text=True, timeout=300, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return run
