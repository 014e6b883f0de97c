"""`ssdkit models` / `ssdkit export`: output and one-line errors with exit code 2."""
import pytest

from ssdkit.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_the_zoo_with_stored_params_and_flops(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "ssd_mnv2 " in out and "1917" in out and "12804" in out and "ssdlite_mnv3_small" in out
    line = next(l for l in out.splitlines() if l.startswith("ssd_mnv2 "))
    assert line.split()[3:5] == ["6.10M", "1.55"]  # convert/data/zoo_costs.json; test_zoo.py rebuilds one network


@pytest.mark.parametrize("argv, message", [
    (["--model", "ssd_mnv9"], "unknown model 'ssd_mnv9'; the zoo has: ssd_mnv1"),
    (["--model", "ssd_mnv2_fpnlite", "--input-size", "300"], "must be a multiple of 32"),
    (["--format", "caffe"], "unknown format 'caffe'; expected one of savedmodel, tflite, onnx"),
    (["--format", "tflite", "--quant", "int4"], "unknown quantization 'int4'"),
    (["--format", "tflite", "--layer-errors", "--no-report"],
     "--layer-errors is the TFLite int8 quantization report's per-layer error; this export writes no such report "
     "(--format tflite --quant int8 --no-report)"),
    (["--format", "tflite", "--quant", "fp32", "--layer-errors"], "(--format tflite --quant fp32)"),
    (["--format", "onnx", "--quant", "int8", "--layer-errors"], "(--format onnx --quant int8)"),
])
def test_bad_export_arguments_exit_2_with_one_line(capsys, tmp_path, argv, message):
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "export", "--out", str(out_dir), *argv)
    assert message in err
    assert code == 2
    assert len([l for l in err.splitlines() if "error:" in l]) == 1
    assert not out_dir.exists()


def test_unwritable_output_exits_2_and_writes_nothing(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "export", "--model", "ssd_mnv2", "--out", str(blocker / "sub"))
    assert code == 2
    assert "cannot create the output folder" in err and str(blocker) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_missing_converter_extra_names_the_install_command(tmp_path):
    import subprocess
    import sys

    script = ("import sys; sys.modules['tf_keras'] = sys.modules['tensorflow'] = None\n"
              f"from ssdkit.cli import main; raise SystemExit(main(['export', '--out', {str(tmp_path / 'x')!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ssdkit export: error: tf_keras is not installed; install it with: pip install 'ssdkit[convert]'")
