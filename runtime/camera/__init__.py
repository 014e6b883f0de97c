"""``ssdkit camera``: a detector on a live source, for hours, at the model's speed.

Three threads hand frames along: capture (``capture.py``, keeps only the
newest frame so a slow model drops frames instead of building lag),
detection and output (``pipeline.py``), so throughput approaches
1 / (slowest stage). Outputs (``outputs.py``, ``mjpeg.py``) and running
statistics (``stats.py``) are separate modules; ``cli.py`` wires them up.
OpenCV (the ``camera`` extra) is imported only when a loop is built.
"""
