"""ssdkit: SSD-MobileNet detectors from training to the edge.

Subpackages: ``ssdkit.convert`` (model zoo and exporters, needs TensorFlow),
``ssdkit.calibration`` (representative data), ``ssdkit.runtime`` (the device
runtime, numpy and a TFLite interpreter only) and ``ssdkit.devices``.
"""
__version__ = "0.1.0"
