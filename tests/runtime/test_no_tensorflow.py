"""The device runtime must never import TensorFlow (a Raspberry Pi has none)."""
import subprocess
import sys


def test_import_runtime_does_not_import_tensorflow():
    script = (
        "import sys, ssdkit.runtime, ssdkit.runtime.spec, ssdkit.runtime.anchors, ssdkit.runtime.box_coder\n"
        "import ssdkit.cli; ssdkit.cli.build_parser()  # every subcommand registered, as on a device\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'))\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
