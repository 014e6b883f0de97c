"""Import TF Object Detection API SSD models (TF1 and TF2) into ssdkit, with a parity check.

``importer.import_model`` is the entry point; ``ssdkit import`` (``cli.py``) the command.
"""
