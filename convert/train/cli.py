"""``ssdkit train``."""
from __future__ import annotations

from pathlib import Path

# QAT fine-tunes a trained model: a twentieth of the from-scratch peak rate
# (TF's QAT guide fine-tunes at the end of the float schedule's rate).
QAT_LEARNING_RATE = 0.004


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train or fine-tune a zoo model on COCO JSON or VOC data (default: synthetic shapes)")
    train.add_argument("--model", help="zoo name (default: the --weights checkpoint's model, else ssd_mnv2)")
    train.add_argument("--data", help="training data: COCO JSON or VOC folder or VOC split file "
                       "(ImageSets/Main/NAME.txt) (default: the built-in synthetic train split)")
    train.add_argument("--val-data", help="validation data: COCO JSON or VOC folder or VOC split file "
                       "(default: the synthetic validation split)")
    train.add_argument("--skip-broken", action="store_true",
                       help="skip images with broken annotations (each one warned about) instead of stopping")
    train.add_argument("--out", help="output folder (default build/train/MODEL)")
    train.add_argument("--weights", help="start from this ssdkit checkpoint (it knows its model: no --model needed)")
    train.add_argument("--backbone-weights", default="auto", help="ImageNet backbone: auto (Keras cache), none, or .h5")
    train.add_argument("--width", type=float, help="width multiplier (default 1.0)")
    train.add_argument("--input-size", type=int, help="square input size (default: the model's)")
    train.add_argument("--steps", type=int, default=20000)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, help="peak learning rate (warmup + cosine; default 0.08, with --qat 0.004)")
    train.add_argument("--qat", action="store_true",
                       help="quantization-aware fine-tuning of the --weights checkpoint: int8 rounding in training; "
                            "`ssdkit export` of the result writes full-integer TFLite without calibration")
    train.add_argument("--warmup-steps", type=int, default=500)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--eval-every", type=int, default=2000)
    train.add_argument("--eval-images", type=int, default=200)
    train.add_argument("--freeze-backbone", action="store_true", help="train only the head (backbone BN in inference mode)")
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--strategy", default="none", help="none, mirrored or multiworker (tf.distribute)")
    train.add_argument("--resume", action="store_true", help="continue from the last state checkpoint in --out")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train)


def _train(args) -> int:
    from ssdkit.datasets.reader import read_dataset
    from ssdkit.datasets.synth import default_split

    from ..checkpoint import prepare_model, read_checkpoint, resolve_model
    from .loop import TrainConfig, train

    model_name = resolve_model(args.model, args.weights)
    checkpoint = read_checkpoint(args.weights) if args.weights else None  # a bad file fails before the data is read
    if args.qat and checkpoint is None:
        raise ValueError("--qat fine-tunes a trained float model: give its checkpoint with --weights")
    if args.qat and args.freeze_backbone:
        raise ValueError("--qat trains the whole fake-quantized network: drop --freeze-backbone")
    train_path = Path(args.data) if args.data else default_split("train") / "annotations.json"
    val_path = Path(args.val_data) if args.val_data else (None if args.data else default_split("val") / "annotations.json")
    train_data = read_dataset(train_path, skip_broken=args.skip_broken)
    val_data = read_dataset(val_path, train_data.labels, args.skip_broken) if val_path else None
    size = (args.input_size, args.input_size) if args.input_size else None
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, warmup_steps=args.warmup_steps,
        learning_rate=args.lr if args.lr is not None else (QAT_LEARNING_RATE if args.qat else 0.08),
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, eval_images=args.eval_images,
        seed=args.seed, freeze_backbone=args.freeze_backbone, augment=not args.no_augment,
    )
    labels = None if args.weights else train_data.labels

    def build():
        model = prepare_model(model_name, checkpoint, width=args.width, input_size=size, labels=labels,
                              backbone_weights=args.backbone_weights, seed=args.seed)
        if args.qat and model.qat is None:
            from ..models.qat import quantize_for_training

            model = quantize_for_training(model)
        return model

    default_out = f"build/train/{checkpoint.definition.name if checkpoint else model_name}{'_qat' if args.qat else ''}"
    out = Path(args.out or default_out)
    history = train(build, train_data, val_data, out, config, args.strategy, args.resume)
    print(history["checkpoint"])
    return 0
