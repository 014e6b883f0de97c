"""Which classes a detector reports, and from what score: MediaPipe Tasks'
category allow and deny lists plus a score threshold per class, for
``Detector``, ``ssdkit detect`` and ``ssdkit camera``.

A ``ClassFilter`` is plain data (class names); ``thresholds`` turns it,
with the model's labels and the global score threshold, into the per-class
threshold vector the ``Decoder`` takes: a class's own threshold, else the
global one, and ``inf`` for a class that is denied (not in ``classes``, or
in ``exclude``). The Decoder removes those before NMS, so a denied class
never suppresses an allowed one, and takes its candidates from the lowest
threshold in the vector, so a class's threshold may be below the global one.

Names are checked against the model's labels where the model is known
(``check_labels``): a typo is one line naming it and the labels there are.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import limits


@dataclass(frozen=True)
class ClassFilter:
    """Class allow/deny lists and per-class score thresholds, by label name.

    Attributes:
      classes: report only these classes (None: every class).
      exclude: never report these classes.
      thresholds: (label, minimum score) pairs that replace the global score
        threshold for their class, above or below it.

    Raises:
      ValueError: ``classes`` and ``exclude`` both given, an empty name, a
        threshold outside 0 to 1, or a threshold for a class that is not reported.
    """

    classes: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    thresholds: tuple[tuple[str, float], ...] = ()

    @classmethod
    def build(cls, classes: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
              thresholds: Mapping[str, float] | Iterable[tuple[str, float]] | None = None) -> "ClassFilter":
        """From any iterables (the ``Detector``'s keyword arguments)."""
        if isinstance(classes, str) or isinstance(exclude, str):
            raise ValueError("classes and exclude_classes are lists of label names, not one string")
        pairs = thresholds.items() if isinstance(thresholds, Mapping) else (thresholds or ())
        return cls(None if classes is None else tuple(classes), tuple(exclude or ()),
                   tuple((str(name), float(value)) for name, value in pairs))

    def __post_init__(self):
        if self.classes is not None and self.exclude:
            raise ValueError("classes (an allow list) and exclude_classes (a deny list) cannot be given together")
        if self.classes is not None and not self.classes:
            raise ValueError("classes is empty: name at least one class to report")
        for name in (*(self.classes or ()), *self.exclude, *(n for n, _ in self.thresholds)):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"class name {name!r}, expected a label name")
        for name, value in self.thresholds:
            limits.LIMITS["score_threshold"].check(value)
            if name in self.exclude or (self.classes is not None and name not in self.classes):
                raise ValueError(f"class_thresholds gives {name!r} a threshold, but the class is not reported "
                                 f"({'excluded' if name in self.exclude else 'not in classes'})")

    @property
    def active(self) -> bool:
        """Whether the filter changes anything (an empty one is the plain global threshold)."""
        return self.classes is not None or bool(self.exclude) or bool(self.thresholds)

    def check_labels(self, labels: Sequence[str], model: str = "the model") -> None:
        """``ValueError`` naming every unknown class name and the labels there are."""
        if not self.active:
            return
        if not labels:
            raise ValueError(f"{model} has no labels in its spec, so classes cannot be chosen by name")
        known = set(labels)
        for where, names in (("classes (--classes)", self.classes or ()),
                             ("exclude_classes (--exclude-classes)", self.exclude),
                             ("class_thresholds (--class-threshold)", [n for n, _ in self.thresholds])):
            unknown = [name for name in dict.fromkeys(names) if name not in known]
            if unknown:
                raise ValueError(f"unknown class{'es' if len(unknown) > 1 else ''} "
                                 f"{', '.join(repr(n) for n in unknown)} in {where}; {model}'s labels: "
                                 f"{', '.join(labels)}")

    def thresholds_for(self, labels: Sequence[str], score_threshold: float) -> np.ndarray:
        """The [len(labels)] float32 threshold of each class: its own, else
        ``score_threshold``; ``inf`` for a class that is not reported."""
        vector = np.full(len(labels), np.float32(score_threshold), np.float32)
        index = {label: i for i, label in enumerate(labels)}
        if self.classes is not None:
            allowed = np.zeros(len(labels), bool)
            allowed[[index[name] for name in self.classes]] = True
            vector[~allowed] = np.inf
        for name in self.exclude:
            vector[index[name]] = np.inf
        for name, value in self.thresholds:
            vector[index[name]] = np.float32(value)
        return vector


def lowered(thresholds: np.ndarray, floor: float) -> np.ndarray:
    """``thresholds`` with every reported class's threshold at most ``floor``
    (denied classes stay ``inf``): the candidates a tracker's low-score stage takes."""
    return np.where(np.isfinite(thresholds), np.minimum(thresholds, np.float32(floor)), thresholds).astype(np.float32)


# -- the command line -------------------------------------------------------


def add_arguments(parser) -> None:
    """``--classes``, ``--exclude-classes`` and ``--class-threshold`` on an argparse parser."""
    group = parser.add_argument_group("classes", "by label name, as in the model's spec; removed before NMS "
                                  "(see README.md for models whose NMS runs inside the file)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--classes", type=names_arg, metavar="NAME,...",
                        help="report only these classes (e.g. person,car)")
    choice.add_argument("--exclude-classes", type=names_arg, metavar="NAME,...",
                        help="never report these classes (they hide nothing: out before NMS)")
    group.add_argument("--class-threshold", type=threshold_arg, action="append", metavar="NAME=SCORE",
                       help="a class's own minimum score (0 to 1), above or below --threshold, e.g. "
                            "person=0.6; repeat it or join with commas")


def from_args(args) -> ClassFilter:
    """The ``ClassFilter`` of parsed ``add_arguments`` options."""
    pairs = [pair for group in (args.class_threshold or ()) for pair in group]
    return ClassFilter.build(args.classes, args.exclude_classes, pairs)


def names_arg(text: str) -> tuple[str, ...]:
    """argparse ``type``: "person,car" -> ("person", "car")."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected label names separated by commas, e.g. person,car")
    return names


def threshold_arg(text: str) -> tuple[tuple[str, float], ...]:
    """argparse ``type``: "person=0.6,car=0.4" -> (("person", 0.6), ("car", 0.4))."""
    pairs = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"{item.strip()!r}: expected NAME=SCORE, e.g. person=0.6")
        try:
            pairs.append((name.strip(), limits.LIMITS["score_threshold"].parse(value)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{name.strip()}: {exc}") from None
    return tuple(pairs)
