"""Every zoo model builds, and its network agrees with its spec's anchors."""
import numpy as np
import pytest

from ssdkit.convert.zoo import ZOO, ModelConfig, model_spec
from ssdkit.runtime.spec import ModelSpec

EXPECTED_ANCHORS = {  # at the zoo's default input sizes
    "ssd_mnv1": 1917, "ssd_mnv2": 1917, "ssdlite_mnv2": 1917,
    "ssdlite_mnv3_small": 2034, "ssdlite_mnv3_large": 2034, "ssd_mnv2_fpnlite": 12804,
}


def test_zoo_lists_the_issue_models():
    assert set(ZOO) == set(EXPECTED_ANCHORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ANCHORS))
def test_default_spec_anchor_count(name):
    spec = model_spec(ModelConfig(name))
    assert spec.num_anchors == EXPECTED_ANCHORS[name] == len(spec.anchor_corners())
    assert spec.num_classes == 90 and spec.labels[0] == "person" and spec.labels[11] == "???"
    assert spec.box_coder.scales == (10.0, 10.0, 5.0, 5.0)


@pytest.mark.parametrize("name", sorted(EXPECTED_ANCHORS))
def test_network_outputs_match_spec(name):
    tf_keras = pytest.importorskip("tf_keras")
    from ssdkit.convert.models.ssd import build_model

    size = 128 if name == "ssd_mnv2_fpnlite" else 96
    model = build_model(ModelConfig(name, width=0.5, input_size=(size, size), labels=("a", "b", "c")).definition())
    image = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    out = model.keras_model(image, training=False)
    assert out["box_encodings"].shape == (2, model.spec.num_anchors, 4)
    assert out["class_predictions"].shape == (2, model.spec.num_anchors, 4)
    assert np.isfinite(out["class_predictions"].numpy()).all()
    tf_keras.backend.clear_session()


def test_spec_json_round_trip():
    spec = model_spec(ModelConfig("ssd_mnv2_fpnlite", labels=("cat", "dog")))
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    np.testing.assert_array_equal(again.anchor_corners(), spec.anchor_corners())


def test_non_square_input_keeps_square_anchors_square():
    spec = model_spec(ModelConfig("ssd_mnv2", input_size=(300, 600)))
    assert spec.feature_map_shapes[0] == (19, 38)
    yc, xc, h, w = spec.anchors_center_size()[0]
    assert h * 300 == pytest.approx(w * 600)  # the (0.1, 1.0) box is square in pixels


@pytest.mark.parametrize("config, message", [
    (ModelConfig("ssd_mnv2_fpnlite", input_size=(300, 300)), "must be a multiple of 32"),
    (ModelConfig("ssd_mnv2", input_size=(16, 16)), "each side must be from 32 to 1280"),
    (ModelConfig("ssd_mnv2", input_size=(320, 10000)), "each side must be from 32 to 1280"),
    (ModelConfig("ssd_mnv2", width=0.0), "width multiplier must be a number from 0.1 to 2, got 0"),
    (ModelConfig("ssd_mnv2", labels=tuple(f"c{i}" for i in range(2001))),
     "number of classes must be an integer from 1 to 2000, got 2001"),
    (ModelConfig("ssd_mnv9"), "unknown model 'ssd_mnv9'"),
])
def test_bad_configs_are_rejected(config, message):
    with pytest.raises(ValueError, match=message):
        model_spec(config)


def test_spec_rejects_unknown_fields():
    data = model_spec(ModelConfig("ssd_mnv2")).to_dict()
    data["preprocessing"]["gamma"] = 2.2
    with pytest.raises(ValueError, match=r"unknown preprocessing field\(s\) \['gamma'\]"):
        ModelSpec.from_dict(data)


def test_stored_costs_cover_the_zoo():
    from ssdkit.convert.zoo import zoo_costs

    costs = zoo_costs()
    assert set(costs) == set(ZOO)  # a new zoo entry needs `make zoo-costs`
    assert all(c["params"] > 1e6 and c["macs"] > 1e8 for c in costs.values())


def test_stored_costs_are_what_a_built_network_counts():
    """`ssdkit models` prints stored numbers; rebuild one network (the
    quickest) to prove they are its own. `make zoo-costs` rewrites them all."""
    pytest.importorskip("tf_keras")
    from ssdkit.convert.models.flops import count_macs
    from ssdkit.convert.models.ssd import build_model
    from ssdkit.convert.zoo import zoo_costs

    keras_model = build_model(ModelConfig("ssdlite_mnv3_small").definition()).keras_model
    assert zoo_costs()["ssdlite_mnv3_small"] == {"params": keras_model.count_params(), "macs": count_macs(keras_model)}
