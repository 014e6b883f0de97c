"""The device runtime: numpy plus a TFLite interpreter or ONNX Runtime.

Nothing in this package imports TensorFlow (``tests/runtime/test_no_tensorflow.py``
checks it): it is what runs on a Raspberry Pi or a Coral board.
"""
from .detector import Detection, Detector
from .spec import ModelSpec

__all__ = ["Detection", "Detector", "ModelSpec"]
