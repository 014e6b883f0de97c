"""The training loop: data, steps, checkpoints, resume, validation, TensorBoard.

Resumable by construction: batch k is drawn from a permutation seeded by
(seed, epoch) and augmented with a generator seeded by (seed, k), so a run
restored at step k sees the same batches as one that never stopped. Training
state (model, optimizer, step) goes to ``OUT/state`` through TF's
CheckpointManager, whose index file is replaced atomically; the exportable
ssdkit checkpoint ``OUT/<model>.npz`` is written at each validation and at the end.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ssdkit.datasets.records import Dataset
from ssdkit.evaluation.metrics import coco_map
from ssdkit.log import note, progress
from ssdkit.runtime import limits
from ssdkit.runtime.decoder import Decoder
from ssdkit.runtime.detector_spec import DetectorSpec
from ssdkit.runtime.preprocess import preprocess
from ssdkit.runtime.spec import ModelSpec

from ..checkpoint import save_checkpoint
from ..models.ssd import SSDModel
from .augment import augment
from .losses import ssd_loss
from .targets import assign

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch_size: int = 16
    learning_rate: float = 0.08
    warmup_steps: int = 500
    warmup_learning_rate: float = 0.005
    momentum: float = 0.9
    checkpoint_every: int = 500
    eval_every: int = 2000
    eval_images: int = 200
    seed: int = 0
    freeze_backbone: bool = False
    freeze_batch_norm: bool = False  # every batch norm in inference mode: its statistics stay (QAT)
    batch_norm_batches: int = 0  # before the first step: batch norm statistics measured afresh on this many batches
    range_batches: int = 0  # then a QAT network's activation ranges from this many batches (qat.calibrate_ranges)
    augment: bool = True
    checkpoint_dtype: str = "float16"
    data: str | None = None  # what the checkpoint records as its training data (default: the dataset's path)

    def __post_init__(self):
        limits.check(steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                     warmup_steps=self.warmup_steps, checkpoint_every=self.checkpoint_every,
                     eval_every=self.eval_every, eval_images=self.eval_images, seed=self.seed)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then cosine decay to 0 at ``total`` steps (OD API's cosine_decay_learning_rate)."""

    def __init__(self, base: float, total: int, warmup: int, warmup_base: float):
        self.base, self.total, self.warmup, self.warmup_base = base, total, warmup, warmup_base

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        cosine = 0.5 * self.base * (1 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))
        warm = self.warmup_base + (self.base - self.warmup_base) * step / max(self.warmup, 1)
        return tf.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return {"base": self.base, "total": self.total, "warmup": self.warmup, "warmup_base": self.warmup_base}


def _example(model: SSDModel, dataset: Dataset, index: int, rng: np.random.Generator | None, anchors: np.ndarray):
    record = dataset.records[index]
    image, boxes, classes = dataset.load_image(record), record.boxes, record.classes
    crowd = record.crowd
    if rng is not None:
        regular = ~crowd
        image, boxes, classes = augment(rng, image, boxes[regular], classes[regular])
        crowd = np.zeros(len(boxes), bool)
    tensor, _ = preprocess(image, model.spec.preprocessing)
    t = assign(boxes, classes, anchors, model.spec.num_classes, model.spec.box_coder.scales, crowd)
    return tensor[0], {"box_targets": t.box_targets, "class_targets": t.class_targets,
                       "box_weights": t.box_weights, "class_weights": t.class_weights}


def batches(model: SSDModel, dataset: Dataset, config: TrainConfig, start_step: int) -> tf.data.Dataset:
    anchors = model.spec.anchor_corners().astype(np.float32)
    n = len(dataset.records)
    if n == 0:
        raise ValueError(f"{dataset.source}: no training images")

    def generate():
        step = start_step
        while True:
            images, targets = [], []
            for i in range(config.batch_size):
                epoch, offset = divmod(step * config.batch_size + i, n)
                index = np.random.default_rng([config.seed, epoch]).permutation(n)[offset]
                rng = np.random.default_rng([config.seed, step, i]) if config.augment else None
                image, target = _example(model, dataset, index, rng, anchors)
                images.append(image)
                targets.append(target)
            yield np.stack(images), {k: np.stack([t[k] for t in targets]) for k in targets[0]}
            step += 1

    height, width = model.spec.input_size
    a, c = model.spec.num_anchors, model.spec.num_classes + 1
    b = config.batch_size
    signature = (tf.TensorSpec([b, height, width, 3], tf.float32), {
        "box_targets": tf.TensorSpec([b, a, 4], tf.float32), "class_targets": tf.TensorSpec([b, a, c], tf.float32),
        "box_weights": tf.TensorSpec([b, a], tf.float32), "class_weights": tf.TensorSpec([b, a], tf.float32)})
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)


VALIDATION_THRESHOLD = 0.01  # low, so the precision/recall curve reaches full recall


def validation_decoder(spec: ModelSpec) -> Decoder:
    """The runtime's decoder with per-class (regular) NMS, as the OD API evaluates."""
    detector_spec = DetectorSpec.from_model_spec(spec)
    return Decoder(dataclasses.replace(detector_spec, nms=dataclasses.replace(detector_spec.nms, kind="tflite_regular")))


def detect_normalized(model: SSDModel, image: np.ndarray, decoder: Decoder):
    """Detections (boxes normalized yxyx, classes, scores) of one image, the
    Keras outputs decoded by the runtime's ``Decoder``."""
    tensor, _ = preprocess(image, model.spec.preprocessing)
    out = model.keras_model(tensor, training=False)
    found = decoder.decode(out["box_encodings"].numpy()[0], out["class_predictions"].numpy()[0], VALIDATION_THRESHOLD)
    return np.clip(found.boxes, 0, 1), found.classes, found.scores


def evaluate(model: SSDModel, dataset: Dataset, limit: int | None = None) -> dict[str, float]:
    records = dataset.records[:limit] if limit else dataset.records
    decoder = validation_decoder(model.spec)
    detections = [detect_normalized(model, dataset.load_image(r), decoder)
                  for r in progress(records, "validation")]
    return coco_map(records, dataset.labels, detections)


def batch_norm_layers(model: SSDModel) -> list:
    return [layer for layer in model.keras_model.submodules if isinstance(layer, keras.layers.BatchNormalization)]


def reestimate_batch_norm(model: SSDModel, data: tf.data.Dataset) -> None:
    """Sets every batch norm's moving mean and variance to the average of its
    batch statistics over ``data`` (batches of images and targets), with the
    current weights.

    Why: the moving averages lag the weights by about 1 / (1 - momentum)
    steps, and ssdkit's heads use the OD API's momentum 0.9997 (~3,300 steps):
    after a short schedule they still hold much of their start (0.9997^4000 =
    0.30 of it after 4,000 steps), so inference mode, which the export and
    the folded int8 model compute, is far from what training measured. On the
    SSDLite MobileNetV3-Small trained 4,000 steps on the synthetic shapes,
    mAP@0.5 on 100 validation images goes from 0.661 to 0.844 with 128 images
    measured (README.md, quantization-aware training). QAT measures them once
    and then freezes batch norm, so it fine-tunes the network int8 will run."""
    layers = batch_norm_layers(model)
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for count, (images, _) in enumerate(data, 1):
            for layer in layers:
                layer.momentum = (count - 1) / count  # moving = the running mean of the batches' statistics
            model.keras_model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    log.info(f"batch norm statistics of {len(layers)} layers measured afresh on {count} batches")


def _strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "none":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}, expected none, mirrored or multiworker")


def train(build, train_data: Dataset, val_data: Dataset | None, out_dir: Path, config: TrainConfig,
          strategy_name: str = "none", resume: bool = False) -> dict:
    """Trains the model ``build()`` returns (called inside the strategy's scope)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trained_on = config.data or str(train_data.source)  # the checkpoints record it: the export's report reads it
    strategy = _strategy(strategy_name)
    with strategy.scope():
        model: SSDModel = build()
        if config.freeze_backbone:
            model.backbone.trainable = False  # Keras 2: frozen BN layers also run in inference mode
        fresh = not (resume and tf.train.latest_checkpoint(str(out_dir / "state")))  # resuming restores both
        plain = dataclasses.replace(config, augment=False)
        if config.batch_norm_batches and fresh:
            reestimate_batch_norm(model, batches(model, train_data, plain, 0).take(config.batch_norm_batches))
        if config.range_batches and fresh and model.qat is not None:
            from ..models.qat import calibrate_ranges

            images = [images for images, _ in batches(model, train_data, plain, 0).take(config.range_batches)]
            log.info(f"{calibrate_ranges(model, images)} QAT activation ranges set from "
                     f"{len(images) * config.batch_size} training images")
        if config.freeze_batch_norm:
            for layer in batch_norm_layers(model):
                layer.trainable = False  # Keras 2: inference mode, moving statistics kept
        schedule = WarmupCosine(config.learning_rate, config.steps, config.warmup_steps, config.warmup_learning_rate)
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        state = tf.train.Checkpoint(model=model.keras_model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(state, str(out_dir / "state"), max_to_keep=2)
    if resume and manager.latest_checkpoint:
        state.restore(manager.latest_checkpoint).expect_partial()
        log.info(f"resumed from {manager.latest_checkpoint} at step {int(step.numpy())}")
    elif resume:
        log.info(f"nothing to resume in {out_dir / 'state'}, starting at step 0")
    arch = model.definition.architecture
    variables = model.keras_model.trainable_variables

    def step_fn(images, targets):
        with tf.GradientTape() as tape:
            outputs = model.keras_model(images, training=True)
            total, loc, cls = ssd_loss(outputs, targets, arch.classification_loss, arch.focal_alpha, arch.focal_gamma)
            regularization = tf.add_n(model.keras_model.losses) if model.keras_model.losses else 0.0
            loss = total + regularization
            scaled = loss / strategy.num_replicas_in_sync
        optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return loss, loc, cls

    @tf.function
    def train_step(images, targets):
        results = strategy.run(step_fn, args=(images, targets))
        return [strategy.reduce(tf.distribute.ReduceOp.MEAN, r, axis=None) for r in results]

    data = strategy.experimental_distribute_dataset(batches(model, train_data, config, int(step.numpy())))
    writer = tf.summary.create_file_writer(str(out_dir / "logs"))
    npz = out_dir / f"{model.spec.name}.npz"
    history: dict = {"loss": [], "eval": []}
    start, first = time.monotonic(), int(step.numpy())
    steps = progress(range(first, config.steps), "training", unit="step")
    for _, (images, targets) in zip(steps, data):
        loss, loc, cls = (float(v) for v in train_step(images, targets))
        step.assign_add(1)
        current = int(step.numpy())
        history["loss"].append(loss)
        with writer.as_default(step=current):
            tf.summary.scalar("loss/total", loss)
            tf.summary.scalar("loss/localization", loc)
            tf.summary.scalar("loss/classification", cls)
            tf.summary.scalar("learning_rate", float(schedule(current)))
        losses = f"loss {loss:.3f} (loc {loc:.3f}, cls {cls:.3f})"
        note(steps, losses)
        if current % config.checkpoint_every == 0 or current == config.steps:
            manager.save(checkpoint_number=current)
            rate = (current - first) * config.batch_size / max(time.monotonic() - start, 1e-6)
            eta = (config.steps - current) * config.batch_size / max(rate, 1e-6)
            log.info(f"step {current}/{config.steps} {losses}, {rate:.1f} img/s, ETA {eta / 60:.0f} min")
        if val_data is not None and (current % config.eval_every == 0 or current == config.steps):
            stats = evaluate(model, val_data, config.eval_images)
            history["eval"].append({"step": current, **stats})
            with writer.as_default(step=current):
                for name in ("mAP", "mAP@0.5"):
                    tf.summary.scalar(f"eval/{name}", stats[name])
            log.info(f"step {current} validation mAP {stats['mAP']:.3f}, mAP@0.5 {stats['mAP@0.5']:.3f}")
            save_checkpoint(model, npz, config.checkpoint_dtype, {"train": {"step": current, "data": trained_on, **stats}})
    save_checkpoint(model, npz, config.checkpoint_dtype, {"train": {"step": int(step.numpy()), "data": trained_on}})
    history["checkpoint"] = str(npz)
    return history
