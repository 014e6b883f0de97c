"""ssdkit.log: library code logs, the command line decides what is shown
(-q / default / -v), progress bars only on a terminal, and the C++ logs of
TensorFlow and its converter follow the same verbosity."""
import logging
import os
import pty
import subprocess
import sys

import pytest

from ssdkit import log
from ssdkit.cli import build_parser, main


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", ""))
    yield
    log.configure("", 0)


def _emit():
    library = logging.getLogger("ssdkit.convert.somewhere")
    library.debug("a debug message")
    library.info("writing things")
    library.warning("careful")


@pytest.mark.parametrize("verbosity, expected", [
    (-1, ["ssdkit x: warning: careful"]),
    (0, ["ssdkit x: writing things", "ssdkit x: warning: careful"]),
    (1, ["ssdkit x: a debug message", "ssdkit x: writing things", "ssdkit x: warning: careful"]),
])
def test_the_command_line_decides_what_library_messages_show(capsys, verbosity, expected):
    log.configure("x", verbosity)
    _emit()
    assert capsys.readouterr().err.splitlines() == expected
    assert logging.getLogger("tensorflow").level == (logging.INFO if verbosity > 0 else logging.ERROR)


def test_q_and_v_go_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-v", "devices"]).verbose == 1
    assert parser.parse_args(["devices", "-v"]).verbose == 1
    assert parser.parse_args(["devices", "-q"]).quiet and not parser.parse_args(["devices"]).quiet
    assert parser.parse_args(["data", "synth", "--out", "x", "-q"]).quiet  # nested commands too
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(["devices", "-q", "-v"])
    assert exit.value.code == 2


def test_errors_show_even_with_q(capsys, tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["-q", "detect", str(tmp_path / "none.tflite"), str(tmp_path / "a.png")]) == 2
    assert capsys.readouterr().err == f"ssdkit detect: error: {tmp_path / 'none.tflite'}: model file not found\n"


PROGRESS = ("from ssdkit import log; log.configure('x', {v}); "
            "print(sum(log.progress(range(3), 'counting', unit='thing')))")


def test_progress_bars_only_on_a_terminal():
    piped = subprocess.run([sys.executable, "-c", PROGRESS.format(v=0)], capture_output=True, text=True, timeout=60)
    assert (piped.stdout, piped.stderr) == ("3\n", "")
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", PROGRESS.format(v=0)], stdout=subprocess.PIPE, stderr=terminal,
                              text=True, timeout=60)
        drawn = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.stdout == "3\n" and "counting:" in drawn and "/3 [" in drawn and "thing/s" in drawn
    quiet = subprocess.run([sys.executable, "-c", PROGRESS.format(v=-1)], capture_output=True, text=True, timeout=60)
    assert quiet.stderr == ""


NATIVE = """
import logging, os
from ssdkit import log
log.configure("x", 0)
with log.native_stderr_captured(enabled={enabled}):
    os.write(2, b"W0000 00:00:1 a C++ library writing to descriptor 2\\n")
    logging.getLogger("ssdkit.x").info("ssdkit's own message")
os.write(2, b"after the block\\n")
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_native_writes_to_stderr_are_captured_not_ssdkits_own(enabled):
    done = subprocess.run([sys.executable, "-c", NATIVE.format(enabled=enabled)], capture_output=True, text=True,
                          timeout=60)
    lines = done.stderr.splitlines()
    native = ["W0000 00:00:1 a C++ library writing to descriptor 2"] if not enabled else []
    assert lines == [*native, "ssdkit x: ssdkit's own message", "after the block"]


TENSORFLOW = "from ssdkit import log; log.configure('x', {v}); import tensorflow as tf; tf.constant(1.0) + 1"


def test_tensorflow_logs_follow_the_verbosity():
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    runs = {v: subprocess.run([sys.executable, "-c", TENSORFLOW.format(v=v)], capture_output=True, text=True,
                              timeout=300, env=env) for v in (0, 1)}
    assert runs[0].returncode == runs[1].returncode == 0
    assert runs[0].stderr == ""
    assert "tensorflow" in runs[1].stderr or "xla" in runs[1].stderr  # its own C++ log lines, e.g. the CUDA probe
