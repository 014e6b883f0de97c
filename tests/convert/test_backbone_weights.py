"""ImageNet backbone weights load from the standard Keras cache or a path."""
import numpy as np
import pytest

keras = pytest.importorskip("tf_keras")

from ssdkit.convert.checkpoint import prepare_model  # noqa: E402
from ssdkit.convert.models.ssd import UntrainedWarning  # noqa: E402


def _keras_application_weights(kind, alpha, path):
    """Writes what Keras would cache: the application's own (no-top) weights file."""
    build = {"mobilenet_v1": keras.applications.MobileNet, "mobilenet_v2": keras.applications.MobileNetV2}[kind]
    keras.utils.set_random_seed(7)
    app = build(input_shape=(128, 128, 3), alpha=alpha, include_top=False, weights=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    app.save_weights(str(path))
    return app


@pytest.mark.parametrize("model, kind, cache_name", [
    ("ssd_mnv2", "mobilenet_v2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"),
    # ssdkit's own MobileNetV1 (SAME padding) must accept the Keras application's file.
    ("ssd_mnv1", "mobilenet_v1", "mobilenet_5_0_224_tf_no_top.h5"),
])
def test_backbone_loads_from_keras_cache(tmp_path, monkeypatch, model, kind, cache_name):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    app = _keras_application_weights(kind, 0.5, tmp_path / "models" / cache_name)
    with pytest.warns(UntrainedWarning, match=f"ImageNet backbone from {tmp_path}"):
        ssd = prepare_model(model, width=0.5, input_size=(96, 96), labels=("a",))
    reference = {w.name: w.numpy() for w in app.weights}
    loaded = {w.name: w.numpy() for w in ssd.backbone.weights}
    shared = set(reference) & set(loaded)
    assert len(shared) == len(reference)
    for name in shared:
        np.testing.assert_array_equal(loaded[name], reference[name])
    keras.backend.clear_session()


def test_backbone_weights_path_that_does_not_fit_is_a_clear_error(tmp_path):
    path = tmp_path / "v2.h5"
    _keras_application_weights("mobilenet_v2", 1.0, path)
    with pytest.raises(ValueError, match=r"v2.h5: cannot load into the mobilenet_v2 backbone at width 0.5"):
        prepare_model("ssd_mnv2", width=0.5, input_size=(96, 96), labels=("a",), backbone_weights=str(path))
    keras.backend.clear_session()
