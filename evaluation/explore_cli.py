"""``ssdkit explore MODEL_DIR``: the int8 graph in Model Explorer, coloured by each layer's int8 error.

Serves Google's Model Explorer (``pip install 'ssdkit[explore]'``) on
127.0.0.1 with the export's int8 .tflite and the node data its quantization
report wrote beside it with ``--layer-errors`` (``MODEL_int8.node_data.json``, ``node_data.py``):
each int8 op coloured by its rmse/scale, the error in quantization steps.
The browser opens only where there is a display; the URL is printed either
way (over SSH: ``ssh -L PORT:127.0.0.1:PORT``). Exit code 2 for a folder
without an int8 model or node data.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ssdkit.runtime import limits

from .node_data import SUFFIX, node_data_path

FIRST_PORT, PORTS = 8080, 20  # Model Explorer's own default and search range
EXPORT_INT8 = "ssdkit export --weights CKPT --format tflite --quant int8 --layer-errors --out {folder}"


def register(subparsers) -> None:
    explore = subparsers.add_parser("explore", help="show an export's int8 graph in Model Explorer, each layer "
                                                    "coloured by its quantization error",
                                    description=__doc__.splitlines()[0])
    explore.add_argument("model_dir", metavar="MODEL_DIR", help="an export folder with an int8 .tflite and its "
                                                                "node data (ssdkit export --quant int8 writes both)")
    explore.add_argument("--port", type=limits.arg("port"),
                         help=f"port on 127.0.0.1, {limits.span('port')} (default: the first free from {FIRST_PORT})")
    explore.add_argument("--no-browser", action="store_true", help="only print the URL (the default without a display)")
    explore.set_defaults(handler=_explore)


def find_int8(folder: Path) -> tuple[Path, Path]:
    """The int8 model of an export folder and its node data: the NMS model
    when both it and the raw one have node data. ``ValueError`` (one line,
    naming the command that writes what is missing) otherwise."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; give an export folder (MODEL_DIR)")
    with_data = sorted(path for path in folder.glob("*_int8*.tflite") if node_data_path(path).is_file())
    if with_data:
        model = min(with_data, key=lambda path: ("_nonms" in path.stem, "_edgetpu" in path.stem, path.name))
        return model, node_data_path(model)
    int8 = sorted(path.name for path in folder.glob("*_int8*.tflite"))
    if not int8:
        raise ValueError(f"{folder}: no int8 .tflite model; export one with: {EXPORT_INT8.format(folder=folder)}")
    raise ValueError(f"{folder}: {int8[0]} has no node data ({Path(int8[0]).stem}{SUFFIX}); re-export with "
                     f"--layer-errors: {EXPORT_INT8.format(folder=folder)} (make tflite LAYER_ERRORS=1; not with "
                     "--no-report; a QAT checkpoint's export has none)")


def _in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _free_port(first: int = FIRST_PORT, count: int = PORTS) -> int:
    for port in range(first, first + count):
        if not _in_use(port):
            return port
    raise OSError(f"ports {first}-{first + count - 1} on 127.0.0.1 are all in use; give --port")


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _explore(args) -> int:
    model, node_data = find_int8(Path(args.model_dir))
    if args.port is not None and _in_use(args.port):
        raise OSError(f"--port {args.port}: 127.0.0.1:{args.port} is in use; give another port or leave --port out")
    import model_explorer
    from model_explorer import server

    config = model_explorer.config().add_model_from_path(str(model)).add_node_data_from_path(str(node_data))
    port = args.port if args.port is not None else _free_port()
    print(f"{model.name} with {node_data.name}: http://127.0.0.1:{port}/?data={config.to_url_param_value()}",
          flush=True)
    # Model Explorer searches for a free port itself only from its default 8080; ours is free or the user's.
    server.start(host="127.0.0.1", port=port, config=config, no_open_in_browser=args.no_browser or not _has_display())
    return 0
