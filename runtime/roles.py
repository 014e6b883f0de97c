"""Output roles: which output tensor of a model is which. The one place the
role names are defined (``RAW_ROLES``, ``DETECTION_ROLES``), with the
``OutputRoles`` every artifact's spec records and the rules that find them
in a file that records none.

A raw SSD head has box encodings and class predictions; a model with its
own NMS has boxes, classes, scores and count. Sources, in order of trust:

1. the spec's ``outputs`` (ssdkit writes them into every artifact; a
   third-party spec may name tensors or give output indices);
2. a TFLite model's ``TFLite_Detection_PostProcess`` op: its outputs are
   (boxes, classes, scores, count) by definition, whatever order the
   converter listed the model's outputs in;
3. tensor names: the OD API's own (``detection_boxes``, ...,
   ``raw_outputs/box_encodings``), then words in them (MediaPipe's
   ``regressors`` and ``classificators``);
4. shapes and positions, as pycoral's ``adapters/detect.py`` does. Boxes
   are the [1, N, 4] output and the count the one-element output. The two
   [1, N] outputs, classes and scores, are told apart by the order the
   exporters are known to produce: TF1's export_tflite_ssd_graph lists
   boxes, classes, scores, count (the op's order); models from TF2's
   export_tflite_graph_tf2 list scores, boxes, count, classes (tensors
   ``StatefulPartitionedCall:1, :3, :0, :2``, see tensorflow/tensorflow#34761
   and tensorflow/flutter-tflite#176), so the count's position decides: last
   means TF1. A position is a guess, so ``settle`` checks it against the
   values the first time the model detects something: class ids are whole
   numbers, scores lie in [0, 1] and are rarely whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence, Union

import numpy as np

from .backends.base import TensorInfo

RAW_ROLES = ("box_encodings", "class_predictions")
DETECTION_ROLES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


@dataclass(frozen=True)
class OutputRoles:
    """Which output tensor of an exported file plays which role.

    ``kind`` is ``"raw"`` (roles ``box_encodings`` and ``class_predictions``;
    ``scores_activated`` says whether the class outputs are already scores) or
    ``"detections"`` (``detection_boxes``, ``detection_classes``,
    ``detection_scores``, ``num_detections``, as TFLite's postprocess op emits).
    ``names`` pairs each role with the tensor name in the file (a third-party
    spec may give an output index instead).
    """

    kind: Literal["raw", "detections"]
    names: tuple[tuple[str, Union[str, int]], ...]
    scores_activated: bool = False

    def name_of(self, role: str) -> str:
        return dict(self.names)[role]

    @classmethod
    def named_as_roles(cls, kind: Literal["raw", "detections"], scores_activated: bool = False) -> "OutputRoles":
        """The roles of a file whose output tensors are named after them (ssdkit's ONNX files)."""
        roles = RAW_ROLES if kind == "raw" else DETECTION_ROLES
        return cls(kind, tuple((role, role) for role in roles), scores_activated)

    @classmethod
    def from_json(cls, values: Any, where: str = "outputs") -> "OutputRoles":
        """A third-party spec's ``{"box_encodings": "name" or index, ..., "scores_activated": bool}``."""
        if not isinstance(values, dict):
            raise ValueError(f"{where} is {type(values).__name__}, expected an object of output roles")
        values = dict(values)
        activated = values.pop("scores_activated", False)
        if not isinstance(activated, bool):
            raise ValueError(f"{where}.scores_activated is {activated!r}, expected true or false")
        roles = set(values)
        if roles == set(RAW_ROLES):
            kind = "raw"
        elif set(DETECTION_ROLES) - {"num_detections"} <= roles <= set(DETECTION_ROLES):
            kind = "detections"
        else:
            raise ValueError(f"{where} {sorted(roles)}, expected {list(RAW_ROLES)} or {list(DETECTION_ROLES)} "
                             "(num_detections optional)")
        for role, name in values.items():
            if not isinstance(name, (str, int)) or isinstance(name, bool) or (isinstance(name, int) and name < 0):
                raise ValueError(f"{where}.{role} is {name!r}, expected a tensor name or an output index (0, 1, ...)")
        return cls(kind, tuple(values.items()), scores_activated=activated)

# Words that name a role in tensor names, for models that do not use the OD API's names.
_KEYWORDS = {
    "detection_boxes": ("box",), "detection_classes": ("class",), "detection_scores": ("score",),
    "num_detections": ("num", "count"),
    "box_encodings": ("box", "regress", "loc"), "class_predictions": ("class", "score", "conf", "logit"),
}


def find_roles(outputs: Sequence[TensorInfo], declared: OutputRoles | None = None,
               op_outputs: Sequence[str] | None = None) -> tuple[OutputRoles, bool]:
    """The roles of a model's outputs, and whether they are certain (False:
    classes and scores were placed by position; call ``settle``)."""
    names = [info.name for info in outputs]
    if declared is not None:
        return _resolve(declared, names), True
    if op_outputs is not None:
        return OutputRoles("detections", tuple(zip(DETECTION_ROLES, op_outputs))), True
    named = _by_name(names)
    if named is not None:
        return named, True
    return _by_shape(outputs)


def settle(roles: OutputRoles, values: dict[str, np.ndarray]) -> OutputRoles | None:
    """Roles that fit the values of one run (classes and scores swapped if
    they were the wrong way round), or None if these values cannot tell."""
    names = dict(roles.names)
    count_name = names.get("num_detections")
    classes = np.asarray(values[names["detection_classes"]], np.float32).reshape(-1)
    scores = np.asarray(values[names["detection_scores"]], np.float32).reshape(-1)
    count = int(np.asarray(values[count_name]).reshape(-1)[0]) if count_name else classes.size
    classes, scores = classes[:count], scores[:count]
    if count <= 0:
        return None

    def like_classes(x: np.ndarray) -> bool:
        return bool(np.all(x == np.round(x)))

    def like_scores(x: np.ndarray) -> bool:
        return bool(np.all((x >= 0) & (x <= 1))) and not like_classes(x)

    if like_classes(classes) and like_scores(scores):
        return roles
    if like_classes(scores) and like_scores(classes):
        names["detection_classes"], names["detection_scores"] = names["detection_scores"], names["detection_classes"]
        return OutputRoles(roles.kind, tuple(names.items()), roles.scores_activated)
    return None


def _resolve(declared: OutputRoles, names: list[str]) -> OutputRoles:
    """Declared roles with output indices turned into names, every name checked."""
    resolved = []
    for role, ref in declared.names:
        if isinstance(ref, int):
            if not 0 <= ref < len(names):
                raise ValueError(f"the spec gives output {ref} for {role}, but the model has {len(names)} outputs {names}")
            ref = names[ref]
        elif ref not in names:
            raise ValueError(f"the spec names output {ref!r} for {role}, but the model's outputs are {names}")
        resolved.append((role, ref))
    return OutputRoles(declared.kind, tuple(resolved), declared.scores_activated)


def _by_name(names: list[str]) -> OutputRoles | None:
    for kind, roles in (("detections", DETECTION_ROLES), ("raw", RAW_ROLES)):
        # Exact: "detection_boxes", "detection_boxes:0", "raw_outputs/box_encodings".
        exact = {role: [n for n in names if n.split(":")[0].split("/")[-1] == role] for role in roles}
        if all(len(found) == 1 for found in exact.values()):
            return OutputRoles(kind, tuple((role, found[0]) for role, found in exact.items()))
        if len(names) != len(roles):
            continue
        # Words: each role in exactly one name and each name holding exactly one role.
        words = {role: [n for n in names if any(w in n.lower() for w in _KEYWORDS[role])] for role in roles}
        taken = [found[0] for found in words.values() if len(found) == 1]
        if len(taken) == len(roles) and len(set(taken)) == len(roles):
            return OutputRoles(kind, tuple((role, found[0]) for role, found in words.items()))
    return None


def _by_shape(outputs: Sequence[TensorInfo]) -> tuple[OutputRoles, bool]:
    names = [info.name for info in outputs]
    shapes = [info.shape for info in outputs]
    if len(outputs) == 4:
        boxes = [i for i, s in enumerate(shapes) if len(s) >= 2 and s[-1] == 4]
        counts = [i for i, s in enumerate(shapes) if all(d == 1 for d in s)]
        if len(boxes) == 1 and len(counts) == 1:
            rest = [i for i in range(4) if i not in (boxes[0], counts[0])]
            # The count last: TF1's order (boxes, classes, scores, count);
            # otherwise TF2's (scores, boxes, count, classes).
            classes, scores = rest if counts[0] == 3 else rest[::-1]
            roles = (("detection_boxes", names[boxes[0]]), ("detection_classes", names[classes]),
                     ("detection_scores", names[scores]), ("num_detections", names[counts[0]]))
            return OutputRoles("detections", roles), False
    if len(outputs) == 2 and all(len(s) == 3 for s in shapes) and shapes[0][1] == shapes[1][1]:
        fours = [i for i, s in enumerate(shapes) if s[-1] == 4]
        if len(fours) == 1:
            return OutputRoles("raw", (("box_encodings", names[fours[0]]),
                                       ("class_predictions", names[1 - fours[0]]))), True
    described = ", ".join(f"{n} {list(s)}" for n, s in zip(names, shapes))
    raise ValueError(f"cannot tell which output is which ({described}); name them in the spec's 'outputs'")
