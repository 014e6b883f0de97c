"""Every number a user can give ssdkit, with its range: one table shared by
the command line and the Python API, so ``Detector(score_threshold=2)`` and
``ssdkit detect --threshold 2`` fail with the same words.

The command line checks these while parsing its arguments (``Limit.arg`` is
an argparse ``type``), so a bad number is reported before TensorFlow, a
model or a dataset is loaded; the library checks them again where the value
is used (``check``), for callers that never pass through the command line.
Upper bounds stop a typo from turning into an allocation the machine cannot
hold (``--input-size 10000`` once grew to 23 GB before the kernel killed it).
Numbers are checked here, pure Python, no imports: the runtime's bottom layer.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

MIN_INPUT_SIDE = 32  # the smallest image the Keras MobileNets accept
MAX_INPUT_SIDE = 1280  # beyond it SSD-MobileNet's anchors are too small to matter and memory grows fast
MAX_CLASSES = 2000


@dataclass(frozen=True)
class Limit:
    """A number's kind and range. ``low``/``high`` are inclusive unless
    ``low_open``; ``None`` means unbounded on that side. NaN and infinities
    are never accepted."""

    words: str  # what the number is, as the message names it: "score threshold"
    kind: type  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def describe(self) -> str:
        """The accepted values in words: "a number from 0 to 1", "an integer of at least 1"."""
        noun = "an integer" if self.kind is int else "a number"
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"{noun} above {low} and at most {high}" if self.low_open else f"{noun} from {low} to {high}"
        if self.low is not None:
            return f"{noun} above {low}" if self.low_open else f"{noun} of at least {low}"
        if self.high is not None:
            return f"{noun} of at most {high}"
        return noun

    def span(self) -> str:
        """The range for help texts: "0 to 1", "at least 1"."""
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"above {low}, at most {high}" if self.low_open else f"{low} to {high}"
        if self.low is not None:
            return f"above {low}" if self.low_open else f"at least {low}"
        return f"at most {high}" if self.high is not None else "any"

    def error(self, value) -> str:
        shown = _number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        return f"{self.words} must be {self.describe()}, got {shown}"

    def check(self, value):
        """``value`` if it is within the limit, else ``ValueError`` naming it."""
        if not self.accepts(value):
            raise ValueError(self.error(value))
        return value

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not (isinstance(value, int) or (float(value).is_integer())):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def parse(self, text: str):
        """The number in ``text``, checked; ``ValueError`` with the limit's words otherwise."""
        try:
            value = self.kind(text.strip())
        except ValueError:
            raise ValueError(self.error(text)) from None
        return self.check(value)

    def arg(self) -> "LimitArg":
        """An argparse ``type`` for this limit."""
        return LimitArg(self)


class LimitArg:
    """argparse ``type``: parses and checks at argument-parsing time; the
    message says the range (argparse prefixes the option's name)."""

    def __init__(self, limit: Limit):
        self.limit = limit
        self.__name__ = limit.kind.__name__

    def __call__(self, text: str):
        try:
            return self.limit.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def __repr__(self) -> str:
        return f"LimitArg({self.limit.words!r})"


class InputSizeArg(LimitArg):
    """argparse ``type`` for ``N`` or ``HxW``: (height, width), each side
    within ``LIMITS["input_side"]``."""

    def __init__(self):
        super().__init__(LIMITS["input_side"])
        self.__name__ = "input size"

    def __call__(self, text: str) -> tuple[int, int]:
        parts = text.lower().split("x")
        if len(parts) not in (1, 2):
            raise argparse.ArgumentTypeError(f"input size {text!r} is not N or HxW")
        try:
            sides = [int(part) for part in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"input size {text!r} is not N or HxW") from None
        for side in sides:
            if not self.limit.accepts(side):
                raise argparse.ArgumentTypeError(f"input size {text}: each side must be {self.limit.describe()}")
        return (sides[0], sides[-1])


SEED_MAX = 2**32 - 1  # numpy's and Keras's seeds are unsigned 32-bit

# The upper bounds are guards, not tuning: each is far above any real use
# (SSD models keep 100 detections, train with batches of 16 to 128) and far
# below what would exhaust memory or run for days on a typo.
LIMITS: dict[str, Limit] = {
    # detection
    "score_threshold": Limit("score threshold", float, 0.0, 1.0),
    "iou_threshold": Limit("IoU threshold", float, 0.0, 1.0, low_open=True),
    "threads": Limit("thread count", int, 1, 256),
    "max_detections": Limit("max detections", int, 1, 10000),
    "detections_per_class": Limit("detections per class", int, 1, 10000),
    # models
    "input_side": Limit("input size", int, MIN_INPUT_SIDE, MAX_INPUT_SIDE),
    "num_classes": Limit("number of classes", int, 1, MAX_CLASSES),
    "width": Limit("width multiplier", float, 0.1, 2.0),
    "seed": Limit("seed", int, 0, SEED_MAX),
    "parity_tolerance": Limit("parity tolerance", float, 0.0, 1.0, low_open=True),  # import: relative raw difference
    # export
    "calib_samples": Limit("calibration sample count", int, 1, 10000),
    "recipe_layers": Limit("recipe layer count", int, 1, 10000),  # ssdkit quantize --recipe auto: layers at int16
    "max_map_drop": Limit("mAP drop budget", float, -100.0, 100.0),  # negative: int8 must gain that much
    "opset": Limit("ONNX opset", int, 13, 17),  # why these: convert/onnx/options.py
    # training
    "steps": Limit("step count", int, 1, 100_000_000),
    "batch_size": Limit("batch size", int, 1, 1024),
    "learning_rate": Limit("learning rate", float, 0.0, 10.0, low_open=True),
    "warmup_steps": Limit("warmup step count", int, 0, 100_000_000),
    "checkpoint_every": Limit("checkpoint interval", int, 1, 100_000_000),
    "eval_every": Limit("evaluation interval", int, 1, 100_000_000),
    "eval_images": Limit("evaluation image count", int, 1, 1_000_000),
    # evaluation, benchmarks
    "images": Limit("image count", int, 1, 1_000_000_000),
    "runs": Limit("run count", int, 1, 1_000_000),
    "tolerance": Limit("tolerance", float, 0.0, 1e6),
    "agreement": Limit("minimum agreement", float, 0.0, 1.0),
    # datasets
    "dataset_size": Limit("number of images", int, 1, 1_000_000),
    "image_side": Limit("image size", int, 32, 4096),
    # camera
    "frames": Limit("frame count", int, 1, None),
    "stats_every": Limit("statistics interval", float, 0.0, 86400.0),
    "retries": Limit("retry count", int, 0, None),
    "retry_delay": Limit("retry delay", float, 0.001, 3600.0),
    "track_lost": Limit("track keep time", float, 0.0, 3600.0),
    "track_low": Limit("low-score tracking threshold", float, 0.0, 1.0),
    "snapshot_clip": Limit("snapshot clip length", float, 0.0, 600.0),
    "summary_rate": Limit("summary rate", float, 0.0, 100.0),
    "message_queue": Limit("message queue size", int, 1, 1_000_000),
    "qos": Limit("MQTT QoS", int, 0, 2),
    # viewers (ssdkit explore)
    "port": Limit("TCP port", int, 1, 65535),
}


def check(**values) -> None:
    """Checks each named value against ``LIMITS`` (``None`` passes: "not
    given"); raises ``ValueError`` for the first one outside its limit."""
    for name, value in values.items():
        if value is not None:
            LIMITS[name].check(value)


def arg(name: str) -> LimitArg:
    """The argparse ``type`` of ``LIMITS[name]``."""
    return LIMITS[name].arg()


def span(name: str) -> str:
    """``LIMITS[name]``'s range for a help text."""
    return LIMITS[name].span()


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
