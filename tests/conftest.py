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
