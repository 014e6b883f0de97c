"""Edge TPU: which ops of a full-integer model the Edge TPU compiler maps,
why the others stay on the CPU, and the compiler run when it is installed.

The rules are Coral's ("TensorFlow models on the Edge TPU",
coral.ai/docs/edgetpu/models-intro): 8-bit quantized tensors (int8 or
uint8), shapes fixed at compile time, at most 3 dimensions larger than 1,
and only the operations of its table. The compiler maps one subgraph: an op
that it cannot map, and every op fed by one, run on the CPU. The
postprocess op always runs on the CPU (with the dequantize ops that feed
it), as in Coral's own SSD models. This check runs without the compiler; the
compiler's log (``*_edgetpu.log``) has the last word.

Files, beside the model ``<stem>.tflite``: ``<stem>_edgetpu_report.md``
and, from ``edgetpu_compiler``, ``<stem>_edgetpu.tflite`` and ``.log``.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ssdkit.fileio import atomic_path
from ssdkit.tables import markdown_table
from ssdkit.runtime.model_files import append_associated_files, tflite_associated_files

from .flatbuffer import Op, ops
from .postprocess_op import OP_NAME

COMPILER = "edgetpu_compiler"
COMPILER_TIMEOUT_S = 600
# Coral's supported-operations table, as TFLite builtin names, with the
# limitations this check can see from the flatbuffer.
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE",
    "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB",
    "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "CONCATENATION", "MAX_POOL_2D"})
EIGHT_BIT = frozenset({"INT8", "UINT8"})
# Constant tensors may also be int32: biases and shape operands.
EIGHT_BIT_OR_BIAS = EIGHT_BIT | {"INT32"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    index: int
    op: str
    edgetpu: bool
    reason: str = ""  # why the op runs on the CPU


@dataclass(frozen=True)
class CompatibilityReport:
    model: str
    placements: tuple[Placement, ...]

    @property
    def cpu(self) -> tuple[Placement, ...]:
        return tuple(p for p in self.placements if not p.edgetpu)

    def summary(self) -> str:
        mapped = len(self.placements) - len(self.cpu)
        groups: dict[tuple[str, str], int] = {}
        for p in self.cpu:
            groups[(p.op, p.reason)] = groups.get((p.op, p.reason), 0) + 1
        cpu = "; ".join(f"{op} x{n} ({reason})" if n > 1 else f"{op} ({reason})" for (op, reason), n in groups.items())
        return f"{mapped} of {len(self.placements)} ops map to the Edge TPU" + (f"; on the CPU: {cpu}" if cpu else "")

    def to_markdown(self) -> str:
        lines = [f"# Edge TPU compatibility: {self.model}", "", self.summary() + ".", "",
                 "Checked against Coral's supported-operations table without the compiler; "
                 "the compiler's log has the last word.", "",
                 markdown_table(("#", "op", "runs on", "why"),
                                [(p.index, p.op, "Edge TPU" if p.edgetpu else "CPU", p.reason) for p in self.placements])]
        return "\n".join(lines) + "\n"


def _unsupported(op: Op) -> str:
    """Why the compiler cannot map ``op`` itself, or "" if it can."""
    if op.name == OP_NAME:
        return "the SSD postprocess (NMS) custom op: runs on the CPU by design"
    if op.custom:
        return "custom op"
    if op.name == "DEQUANTIZE":
        return "int8 -> float for the float op it feeds (the Edge TPU has no float)"
    if op.name not in SUPPORTED_OPS:
        return f"{op.name} is not an Edge TPU operation"
    for t in op.inputs + op.outputs:
        allowed = EIGHT_BIT_OR_BIAS if t.constant else EIGHT_BIT
        if t.dtype not in allowed:
            return f"{t.dtype.lower()} tensor '{t.name}' (the Edge TPU computes 8-bit quantized tensors only)"
        if -1 in t.shape_signature:
            return f"tensor '{t.name}' has a dynamic shape {list(t.shape_signature)}"
        if not t.constant and sum(d > 1 for d in t.shape) > 3:  # weights are 4-D by nature
            return f"tensor '{t.name}' of shape {list(t.shape)} has more than 3 dimensions larger than 1"
    if op.name in NO_FUSED_ACTIVATION and op.fused_activation != "NONE":
        return f"fused activation {op.fused_activation} (not supported on {op.name})"
    return ""


def check(model_bytes: bytes, name: str = "model") -> CompatibilityReport:
    """Where each op of the model would run once compiled for the Edge TPU."""
    on_cpu: set[str] = set()  # names of tensors computed on the CPU
    placements = []
    for op in ops(model_bytes):
        reason = _unsupported(op)
        if not reason:
            fed_by = next((t.name for t in op.inputs if t.name in on_cpu), None)
            if fed_by is not None:
                reason = f"fed by '{fed_by}', computed on the CPU (the compiler maps one subgraph)"
        if reason:
            on_cpu.update(t.name for t in op.outputs)
        placements.append(Placement(op.index, op.name, not reason, reason))
    return CompatibilityReport(name, tuple(placements))


def write_report(model_path: Path) -> tuple[Path, CompatibilityReport]:
    """Checks ``model_path`` and writes ``<stem>_edgetpu_report.md`` beside it."""
    report = check(model_path.read_bytes(), model_path.name)
    target = model_path.with_name(f"{model_path.stem}_edgetpu_report.md")
    with atomic_path(target) as tmp:
        tmp.write_text(report.to_markdown())
    return target, report


def compile_model(model_path: Path) -> list[Path]:
    """Runs ``edgetpu_compiler`` on ``model_path`` when it is on PATH and
    writes ``<stem>_edgetpu.tflite`` (carrying the model's spec again: the
    compiler drops the appended files) and its log beside the model.
    Returns the written paths, [] when the compiler is not installed."""
    compiler = shutil.which(COMPILER)
    if compiler is None:
        log.info(f"{COMPILER} is not on PATH; {model_path.name} is ready for it "
                 f"(compile on x86-64 Linux: {COMPILER} {model_path.name})")
        return []
    log.info(f"compiling {model_path.name} with {compiler}")
    with tempfile.TemporaryDirectory(prefix="ssdkit-edgetpu-", dir=model_path.parent) as tmp:
        try:
            result = subprocess.run([compiler, "--out_dir", tmp, "--show_operations", str(model_path)],
                                    capture_output=True, text=True, timeout=COMPILER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{COMPILER} did not finish {model_path.name} in {COMPILER_TIMEOUT_S} s") from None
        compiled = Path(tmp) / f"{model_path.stem}_edgetpu.tflite"
        if result.returncode != 0 or not compiled.is_file():
            output = (result.stdout + result.stderr).strip().splitlines()
            detail = output[-1] if output else f"exit code {result.returncode}"
            raise RuntimeError(f"{COMPILER} failed on {model_path.name}: {detail}")
        compiler_log = Path(tmp) / f"{model_path.stem}_edgetpu.log"
        written = []
        files = tflite_associated_files(model_path)
        for source, data in ((compiled, append_associated_files(compiled.read_bytes(), files)),
                             (compiler_log, compiler_log.read_bytes() if compiler_log.is_file() else None)):
            if data is None:
                continue
            target = model_path.with_name(source.name)
            with atomic_path(target) as tmp_file:
                tmp_file.write_bytes(data)
            written.append(target)
    return written


def prepare(model_path: Path) -> list[Path]:
    """The ``--edgetpu`` step after conversion: report, then compile."""
    report_path, report = write_report(model_path)
    log.info(f"Edge TPU: {report.summary()} (see {report_path.name})")
    return [report_path, *compile_model(model_path)]
