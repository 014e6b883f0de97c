"""ssdkit: SSD-MobileNet detectors from training to the edge.

Subpackages, from the bottom up (each imports only those below it):
``ssdkit.runtime`` (the device runtime: numpy and a TFLite interpreter, never
TensorFlow) with ``ssdkit.devices`` (device profiles); ``ssdkit.datasets``
(COCO, Pascal VOC and the synthetic shapes); ``ssdkit.calibration``
(representative data) and ``ssdkit.evaluation`` (mAP, parity, quantization
report, benchmarks); ``ssdkit.convert`` (model zoo, training and the
SavedModel/TFLite/ONNX exporters, needs TensorFlow); ``ssdkit.cli``.
"""
__version__ = "0.1.0"
