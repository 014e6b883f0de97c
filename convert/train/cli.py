"""``ssdkit train``."""
from __future__ import annotations

from pathlib import Path


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
    train.add_argument("--weights", help="start from this ssdkit checkpoint (.npz, or an `ssdkit import` folder; it knows its model: no --model needed)")
    train.add_argument("--labels", help="with --weights: train these classes (a labels file, one per line) instead of "
                                        "the checkpoint's; only the class head starts afresh")
    train.add_argument("--num-classes", type=int, help="with --weights: train N classes named class_1..class_N "
                                                       "instead of the checkpoint's (class head afresh)")
    train.add_argument("--backbone-weights", default="auto", help="ImageNet backbone: auto (Keras cache), none, or .h5")
    train.add_argument("--width", type=float, help="width multiplier (default 1.0)")
    train.add_argument("--input-size", type=int, help="square input size (default: the model's)")
    train.add_argument("--steps", type=int, default=20000)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=0.08, help="peak learning rate (warmup + cosine)")
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

    if args.labels and args.num_classes:
        raise ValueError("give --labels or --num-classes, not both")
    if (args.labels or args.num_classes) and not args.weights:
        raise ValueError("--labels and --num-classes re-initialise a checkpoint's class head: give --weights too "
                         "(without it the classes come from the training data)")
    new_labels = _read_labels(args.labels) if args.labels else (
        tuple(f"class_{i}" for i in range(1, args.num_classes + 1)) if args.num_classes else None)
    model_name = resolve_model(args.model, args.weights)
    checkpoint = read_checkpoint(args.weights) if args.weights else None  # a bad file fails before the data is read
    train_path = Path(args.data) if args.data else default_split("train") / "annotations.json"
    val_path = Path(args.val_data) if args.val_data else (None if args.data else default_split("val") / "annotations.json")
    # Fine-tuning a checkpoint: its classes (or the new ones) decide the class ids, matched to the data by name.
    wanted = new_labels or (checkpoint.definition.spec.labels if checkpoint else None)
    train_data = read_dataset(train_path, wanted, skip_broken=args.skip_broken)
    val_data = read_dataset(val_path, train_data.labels, args.skip_broken) if val_path else None
    size = (args.input_size, args.input_size) if args.input_size else None
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=args.warmup_steps,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, eval_images=args.eval_images,
        seed=args.seed, freeze_backbone=args.freeze_backbone, augment=not args.no_augment,
    )
    labels = new_labels if args.weights else train_data.labels

    def build():
        return prepare_model(model_name, checkpoint, width=args.width, input_size=size, labels=labels,
                             backbone_weights=args.backbone_weights, seed=args.seed, new_classes=bool(new_labels))

    out = Path(args.out or f"build/train/{checkpoint.definition.name if checkpoint else model_name}")
    history = train(build, train_data, val_data, out, config, args.strategy, args.resume)
    print(history["checkpoint"])
    return 0


def _read_labels(path: str) -> tuple[str, ...]:
    try:
        labels = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    except OSError as exc:
        raise OSError(f"{path}: cannot read labels file ({exc.strerror})") from None
    if not labels:
        raise ValueError(f"{path}: labels file has no labels")
    return labels
