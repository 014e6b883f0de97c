"""The quantization debugger's per-layer error as Model Explorer node data,
and ``ssdkit explore`` serving it: the file read with Model Explorer's own
data classes, its node ids checked against the graph Model Explorer's TFLite
adapter builds from the export, and the real server asked for the page, the
graph and the node data over HTTP. (No browser test: no Chromium here.)"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("model_explorer")
dacite = pytest.importorskip("dacite")  # Model Explorer's own dependency, which it loads node data with

from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter  # noqa: E402
from model_explorer.node_data_builder import GraphNodeData  # noqa: E402

from ssdkit.evaluation.node_data import NAME, node_data_path, op_nodes  # noqa: E402

ADAPTER = BuiltinTfliteFlatbufferAdapter.metadata.id


@pytest.fixture(scope="module")
def int8_export(tiny_tflite):
    """The tiny network's raw int8 export with its quantization report and
    ``--layer-errors``' node data: (model, node data path)."""
    model = tiny_tflite(quant="int8", nms=False, layer_errors=True).parent / "ssd_mnv2_int8_nonms.tflite"
    return model, node_data_path(model)


def _attrs(metadata: dict) -> dict:
    return {attr["key"]: attr["value"] for attr in metadata["attrs"]}


def _nodes(graph_collections) -> dict[str, dict]:
    (collection,) = graph_collections
    graph = collection["graphs"][0] if isinstance(collection, dict) else collection.graphs[0]
    return {node["id"]: node for node in graph["nodes"]}


def test_node_data_loads_with_model_explorers_classes_onto_the_adapters_op_nodes(int8_export):
    model, path = int8_export
    assert path.name == "ssd_mnv2_int8_nonms.node_data.json"
    data = dacite.from_dict(GraphNodeData, json.loads(path.read_text()), config=dacite.Config(strict=True))
    assert data.name == NAME
    values = [result.value for result in data.results.values()]
    assert len(values) >= 20 and all(math.isfinite(v) and v >= 0 for v in values)  # 0: a reshape copies exactly
    assert max(values) > 0.29  # rounding alone gives 1/sqrt(12) steps
    assert [t.value for t in data.thresholds] == sorted(t.value for t in data.thresholds)
    assert data.thresholds[-1].value >= max(values)  # every node gets a colour

    nodes = _nodes(BuiltinTfliteFlatbufferAdapter().convert(str(model), {})["graphCollections"])
    names = {node_id: name for name, node_id in op_nodes(model).items()}
    for node_id in data.results:
        output = _attrs(nodes[node_id]["outputsMetadata"][0])
        assert output["tensor_name"] == names[node_id], node_id  # the layer the debugger measured, on its own node
        assert output["tensor_shape"].startswith(("int8", "uint8")), (node_id, output)  # uint8: the raw outputs
        assert nodes[node_id]["label"] not in ("pseudo_const", "GraphInputs", "GraphOutputs")
    measured = {nodes[node_id]["label"] for node_id in data.results}
    assert {"conv_2d", "depthwise_conv_2d"} <= measured


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def test_explore_serves_the_page_the_graph_and_the_node_data(int8_export, tmp_path):
    model, path = int8_export
    port = _free_port()
    env = {**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    log = (tmp_path / "explore.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "ssdkit", "explore", str(model.parent), "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "explore.log").read_text()
            try:
                status, page = _get(base + "/")
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "explore.log").read_text()
                time.sleep(0.5)
        assert status == 200 and b"<html" in page.lower()
        printed = (tmp_path / "explore.log").read_text().splitlines()[0]
        assert printed.startswith(f"{model.name} with {path.name}: {base}/?data=")
        shown = json.loads(urllib.parse.unquote(printed.split("?data=", 1)[1]))
        assert shown["models"] == [{"url": str(model.resolve())}] and shown["nodeData"] == [str(path.resolve())]

        command = {"extensionId": ADAPTER, "cmdId": "convert", "modelPath": str(model.resolve()), "settings": {},
                   "deleteAfterConversion": False}  # what the web app sends to load the graph
        status, body = _get(f"{base}/api/v1/send_command?" + urllib.parse.urlencode({"json": json.dumps(command)}))
        graphs = json.loads(body)
        assert status == 200 and "error" not in graphs, graphs
        nodes = _nodes(graphs["graphCollections"])
        status, body = _get(f"{base}/api/v1/read_text_file?" + urllib.parse.urlencode({"path": str(path.resolve())}))
        overlay = json.loads(json.loads(body)["content"])
        assert overlay == json.loads(path.read_text())
        assert set(overlay["results"]) <= set(nodes)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_explore_says_which_export_makes_what_is_missing(int8_export, tmp_path, cli_in_fresh_process):
    model, _ = int8_export
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_data").mkdir()
    (tmp_path / "no_data" / model.name).write_bytes(model.read_bytes())
    results = cli_in_fresh_process([["explore", "missing"], ["explore", "empty"], ["explore", "no_data"]], tmp_path)
    for result in results:
        assert result["code"] == 2, result
        assert result["stderr"].count("\n") == 1, result["stderr"]  # one line
        assert "tensorflow" not in result["heavy"]
    missing, empty, no_data = (result["stderr"] for result in results)
    assert "missing: not a folder" in missing
    assert "empty: no int8 .tflite model; export one with: ssdkit export" in empty and "--layer-errors" in empty
    assert f"{model.name} has no node data ({model.stem}.node_data.json)" in no_data
    assert "re-export with --layer-errors: ssdkit export" in no_data and "LAYER_ERRORS=1" in no_data
