"""``ssdkit train``."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from ssdkit.runtime.limits import arg, span

from ..zoo import labels_arg


STRATEGIES = ("none", "mirrored", "multiworker")

# QAT fine-tunes a trained model for the network int8 runs: batch norm statistics
# measured afresh once (loop.reestimate_batch_norm: a short float schedule leaves
# them stale), then batch norm frozen in inference mode, as the OD API's TF1 QAT
# did after its freeze_bn_delay (what the int8 model folds into its convolutions);
# no warmup back up to a peak, and a rate near the end of the float cosine
# schedule's (its mean over the last tenth is ~0.0007 for the peak 0.08).
QAT_LEARNING_RATE = 0.0003
QAT_BATCH_NORM_BATCHES = 16
QAT_RANGE_BATCHES = 8  # then the fake-quant ranges from the float activations (qat.calibrate_ranges)


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train or fine-tune a zoo model on COCO JSON or VOC data (default: synthetic shapes)")
    train.add_argument("--model", help="zoo name (default: the --weights checkpoint's model, else ssd_mnv2)")
    train.add_argument("--data", help="training data: COCO JSON or VOC folder or VOC split file "
                       "(ImageSets/Main/NAME.txt) (default: the built-in synthetic train split); its classes are "
                       "the model's: COCO categories in category-id order, VOC names sorted")
    train.add_argument("--val-data", help="validation data: COCO JSON or VOC folder or VOC split file "
                       "(default: the synthetic validation split)")
    train.add_argument("--skip-broken", action="store_true",
                       help="skip images with broken annotations instead of stopping: one warning names each, "
                            "then one counts them")
    train.add_argument("--out", help="output folder (default build/train/MODEL)")
    train.add_argument("--weights", help="start from this ssdkit checkpoint (.npz, or an `ssdkit import` folder; it "
                                         "knows its model: no --model needed)")
    train.add_argument("--labels", type=labels_arg, help="with --weights: train these classes (a labels file, one per line) "
                                                      "instead of the checkpoint's; only the class head starts afresh")
    train.add_argument("--num-classes", type=arg("num_classes"),
                       help=f"with --weights: train N classes, {span('num_classes')}, named class_1..class_N instead "
                            "of the checkpoint's (class head afresh)")
    train.add_argument("--backbone-weights", default="auto", help="ImageNet backbone: auto (Keras cache), none, or .h5")
    train.add_argument("--width", type=arg("width"), help=f"width multiplier, {span('width')} (default 1.0)")
    train.add_argument("--input-size", type=arg("input_side"),
                       help=f"square input size, {span('input_side')} and one the model accepts (FPN: a multiple "
                            "of 32) (default: the model's)")
    train.add_argument("--steps", type=arg("steps"), default=20000, help=f"training steps, {span('steps')} (default 20000)")
    train.add_argument("--batch-size", type=arg("batch_size"), default=16,
                       help=f"images per step, {span('batch_size')} (default 16)")
    train.add_argument("--lr", type=arg("learning_rate"),
                       help=f"peak learning rate (warmup + cosine), {span('learning_rate')} (default 0.08; "
                            f"with --qat {QAT_LEARNING_RATE})")
    train.add_argument("--qat", action="store_true",
                       help="quantization-aware fine-tuning of the --weights checkpoint: int8 rounding in training; "
                            "`ssdkit export` of the result writes full-integer TFLite without calibration; batch "
                            "norm statistics are measured afresh, then frozen (inference mode)")
    train.add_argument("--qat-train-batch-norm", action="store_true",
                       help="with --qat: batch norm in training mode instead (batch statistics, moving averages updated)")
    train.add_argument("--warmup-steps", type=arg("warmup_steps"),
                       help=f"linear warmup steps, {span('warmup_steps')} (default 500; with --qat 0)")
    train.add_argument("--checkpoint-every", type=arg("checkpoint_every"), default=500,
                       help=f"steps between state checkpoints, {span('checkpoint_every')} (default 500)")
    train.add_argument("--eval-every", type=arg("eval_every"), default=2000,
                       help=f"steps between validations, {span('eval_every')} (default 2000)")
    train.add_argument("--eval-images", type=arg("eval_images"), default=200,
                       help=f"validation images, {span('eval_images')} (default 200)")
    train.add_argument("--freeze-backbone", action="store_true", help="train only the head (backbone BN in inference mode)")
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--strategy", default="none", choices=STRATEGIES, help="none, mirrored or multiworker (tf.distribute)")
    train.add_argument("--resume", action="store_true", help="continue from the last state checkpoint in --out")
    train.add_argument("--seed", type=arg("seed"), default=0, help=f"seed, {span('seed')} (default 0)")
    train.set_defaults(handler=_train)


def _train(args) -> int:
    """Data and options are checked before TensorFlow is imported."""
    from ssdkit.datasets.reader import read_dataset
    from ssdkit.datasets.synth import SYNTHETIC_DATA, default_split
    from ssdkit.fileio import check_writable_folder

    from ..checkpoint import read_checkpoint, resolve_model
    from ..zoo import ModelConfig, get_entry, model_spec

    if args.labels and args.num_classes:
        raise ValueError("give --labels or --num-classes, not both")
    if (args.labels or args.num_classes) and not args.weights:
        raise ValueError("--labels and --num-classes re-initialise a checkpoint's class head: give --weights too "
                         "(without it the classes come from the training data)")
    new_labels = args.labels or (
        tuple(f"class_{i}" for i in range(1, args.num_classes + 1)) if args.num_classes else None)
    model_name = resolve_model(args.model, args.weights)
    checkpoint = read_checkpoint(args.weights) if args.weights else None  # a bad file fails before the data is read
    if args.qat and checkpoint is None:
        raise ValueError("--qat fine-tunes a trained float model: give its checkpoint with --weights")
    if args.qat_train_batch_norm and not args.qat:
        raise ValueError("--qat-train-batch-norm is an option of --qat")
    if args.qat and args.freeze_backbone:
        raise ValueError("--qat trains the whole fake-quantized network: drop --freeze-backbone")
    if model_name is not None:
        get_entry(model_name)
    size = (args.input_size, args.input_size) if args.input_size else None
    if checkpoint is None:  # the size against the architecture (a checkpoint's network is checked when built)
        model_spec(ModelConfig(model_name, width=args.width or 1.0, input_size=size))
    out = Path(args.out or f"build/train/{checkpoint.definition.name if checkpoint else model_name}"
                           f"{'_qat' if args.qat else ''}")
    check_writable_folder(out)
    train_path = Path(args.data) if args.data else default_split("train") / "annotations.json"
    val_path = Path(args.val_data) if args.val_data else (None if args.data else default_split("val") / "annotations.json")
    # Fine-tuning a checkpoint: its classes (or the new ones) decide the class ids, matched to the data by name.
    wanted = new_labels or (checkpoint.definition.spec.labels if checkpoint else None)
    train_data = read_dataset(train_path, wanted, skip_broken=args.skip_broken)
    val_data = read_dataset(val_path, train_data.labels, args.skip_broken) if val_path else None

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..checkpoint import prepare_model
    from ..models.ssd import UntrainedWarning
    from .loop import TrainConfig, train

    from_float = args.qat and "qat" not in checkpoint.meta  # a QAT checkpoint has its statistics and ranges
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else (0 if args.qat else 500),
        learning_rate=args.lr if args.lr is not None else (QAT_LEARNING_RATE if args.qat else 0.08),
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, eval_images=args.eval_images,
        seed=args.seed, freeze_backbone=args.freeze_backbone, augment=not args.no_augment,
        freeze_batch_norm=args.qat and not args.qat_train_batch_norm,
        batch_norm_batches=QAT_BATCH_NORM_BATCHES if from_float and not args.qat_train_batch_norm else 0,
        range_batches=QAT_RANGE_BATCHES if from_float else 0,
        data=None if args.data else SYNTHETIC_DATA,
    )
    labels = new_labels if args.weights else train_data.labels

    def build():
        with warnings.catch_warnings():  # "untrained: see `ssdkit train`" says nothing to someone training it
            warnings.simplefilter("ignore", UntrainedWarning)
            model = prepare_model(model_name, checkpoint, width=args.width, input_size=size, labels=labels,
                                  backbone_weights=args.backbone_weights, seed=args.seed, new_classes=bool(new_labels))
        if args.qat and model.qat is None:
            from ..models.qat import quantize_for_training

            model = quantize_for_training(model)
        return model

    history = train(build, train_data, val_data, out, config, args.strategy, args.resume)
    print(history["checkpoint"])
    return 0
