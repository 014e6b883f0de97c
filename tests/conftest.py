"""Fixtures shared across test folders."""
import pytest


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory):
    """``tiny_tflite(**TFLiteOptions fields)`` -> path of the tiny test network
    (untrained ssd_mnv2, width 0.35, 96x96, labels a and b) exported as TFLite
    with those options; each variant is exported once per session."""
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
            exported[key] = export(model, "tflite", out, ExportOptions(tflite=TFLiteOptions(**options)))[-1]
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
