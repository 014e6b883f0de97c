"""The device runtime: numpy plus a TFLite interpreter or ONNX Runtime.

Nothing in this package imports TensorFlow (``tests/runtime/test_no_tensorflow.py``
checks it): it is what runs on a Raspberry Pi or a Coral board.
"""
from .detector import Detection, Detector, Timings
from .spec import ModelSpec
from .third_party import DetectorSpec, load_spec

__all__ = ["Detection", "Detector", "DetectorSpec", "ModelSpec", "Timings", "load_spec"]
