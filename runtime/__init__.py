"""The device runtime: numpy plus a TFLite interpreter or ONNX Runtime.

Nothing in this package imports TensorFlow (``tests/runtime/test_no_tensorflow.py``
checks it): it is what runs on a Raspberry Pi or a Coral board.
"""
from .class_filter import ClassFilter
from .decoder import Decoded, Decoder
from .detector import Detection, Detector, RawOutputs, Timings
from .detector_spec import DetectorSpec, load_spec
from .spec import ModelSpec

__all__ = ["ClassFilter", "Decoded", "Decoder", "Detection", "Detector", "DetectorSpec", "ModelSpec", "RawOutputs", "Timings",
           "load_spec"]
