"""Batch norm statistics measured afresh (``loop.reestimate_batch_norm``, what
``ssdkit train --qat`` does before freezing batch norm): each moving mean
becomes the mean of the batches' statistics, whatever it held before."""
import types

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


def test_reestimated_statistics_are_the_mean_of_the_batches():
    import tf_keras as keras

    from ssdkit.convert.train.loop import batch_norm_layers, reestimate_batch_norm

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    features = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)(inputs)
    outputs = keras.layers.BatchNormalization(momentum=0.9997)(features)
    model = types.SimpleNamespace(keras_model=keras.Model(inputs, outputs))
    norm = batch_norm_layers(model)[0]
    rng = np.random.default_rng(0)
    images = [rng.normal(2.0, 3.0, (4, 6, 6, 2)).astype(np.float32) for _ in range(5)]
    data = tf.data.Dataset.from_tensor_slices((np.stack(images), np.zeros(5))).map(lambda x, y: (x, y))

    reestimate_batch_norm(model, data)

    conv = keras.Model(inputs, features)
    batch_means = [conv(x).numpy().mean(axis=(0, 1, 2)) for x in images]
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-5)
    batch_vars = [conv(x).numpy().var(axis=(0, 1, 2)) for x in images]
    n = 4 * 6 * 6  # values per channel and batch: Keras keeps the unbiased variance
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean(batch_vars, axis=0) * n / (n - 1), rtol=1e-3)
    assert norm.momentum == 0.9997  # restored
