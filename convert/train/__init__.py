"""``ssdkit train``: the TF Object Detection API's SSD training recipe."""
