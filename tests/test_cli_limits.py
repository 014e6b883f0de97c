"""Every numeric option of every command has a documented range
(``ssdkit.runtime.limits``): a value outside it is exit code 2 and one line
naming the option and the range, before TensorFlow (or OpenCV, a model, a
dataset) is imported. ``--help`` and the argument errors found after parsing
import no TensorFlow either. Checked by looking at ``sys.modules`` of a fresh
process when each command returns, not with a timer."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from ssdkit.cli import build_parser
from ssdkit.runtime import limits
from ssdkit.runtime.limits import LIMITS, InputSizeArg, Limit, LimitArg

TENSORFLOW = {"tensorflow", "tf_keras", "keras"}
# Positional arguments that let each command's parser reach its options.
POSITIONALS = {"detect": ["m.tflite", "images"], "camera": ["m.tflite", "--source", "0"], "eval": ["m.tflite"],
               "verify": ["d"], "bench": ["d"], "explore": ["d"],
               "quantize": ["m.tflite", "--calib-data", "d"], "data synth": ["--out", "o"], "import": ["src"]}


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, its parser) for every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
    if prefix:
        yield prefix, parser


def _numeric_options():
    """(command words, option string, LimitArg) for every option whose type is a limit."""
    for words, parser in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action.type, LimitArg):
                yield words, action.option_strings[-1], action.type


def test_every_numeric_option_has_a_limit():
    """No option of any command parses a number without a range."""
    loose = [f"ssdkit {' '.join(words)} {action.option_strings}" for words, parser in _commands(build_parser())
             for action in parser._actions if action.type in (int, float)]
    assert not loose, loose
    assert len(list(_numeric_options())) >= 40  # export, train, data, eval, verify, bench, detect, camera


def _out_of_range(limit: Limit, rng: np.random.Generator) -> list[str]:
    """Texts outside ``limit``: below, above, at an open bound, not finite, not a number, not an integer."""
    values = ["nan", "inf", "-inf", rng.choice(["abc", "", "1,5", "0x10", "1e"])]
    step = (lambda: int(rng.integers(1, 10**6))) if limit.kind is int else (lambda: float(rng.exponential(10)) + 1e-6)
    if limit.low is not None:
        values.append(repr(limit.low) if limit.low_open else str(limit.kind(limit.low) - step()))
    if limit.high is not None:
        values.append(str(limit.kind(limit.high) + step()))
        values.append(str(limit.kind(limit.high) * 10**int(rng.integers(2, 9)) + 1))
    if limit.kind is int:
        values.append(f"{limit.low if limit.low is not None else 1}.5")
    return [str(v) for v in values]


def _cases(seed: int = 13):
    rng = np.random.default_rng(seed)
    cases = []
    for words, option, parse in _numeric_options():
        if isinstance(parse, InputSizeArg):
            texts = [str(v) for v in (31, 1281, 10000, 0)] + ["300x10000", "16x300", "axb", "300x300x3"]
        else:
            texts = _out_of_range(parse.limit, rng)
        for text in texts:
            argv = [*words, *POSITIONALS.get(" ".join(words), []), f"{option}={text}"]
            cases.append((words, option, parse, text, argv))
    return cases


def test_random_out_of_range_values_are_exit_2_before_tensorflow(cli_in_fresh_process, tmp_path):
    """Seeded random values outside every numeric option's range, each
    command run in one fresh interpreter."""
    cases = _cases()
    results = cli_in_fresh_process([argv for *_, argv in cases], tmp_path)
    for (words, option, parse, text, argv), result in zip(cases, results):
        lines = result["stderr"].splitlines()
        assert result["code"] == 2, (argv, result)
        assert len(lines) == 1, (argv, lines)
        assert lines[0].startswith(f"ssdkit {' '.join(words)}: error: argument {option}: "), (argv, lines)
        assert parse.limit.words in lines[0] or "input size" in lines[0], (argv, lines)
        assert not result["heavy"], (argv, result["heavy"])
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary folder


@pytest.mark.parametrize("argv, message", [
    # The issue's cases: each once grew memory, ran, or quietly did nothing.
    (["export", "--input-size", "10000"], "argument --input-size: input size 10000: each side must be an integer "
                                          "from 32 to 1280"),
    (["export", "--num-classes", "1000000"], "argument --num-classes: number of classes must be an integer from 1 "
                                             "to 2000, got 1000000"),
    (["export", "--num-classes", "0"], "argument --num-classes: number of classes must be an integer from 1 to 2000, "
                                       "got 0"),
    (["detect", "m.tflite", "images", "--threshold", "1.5"], "argument --threshold: score threshold must be a number "
                                                             "from 0 to 1, got 1.5"),
    (["eval", "m.tflite", "--threshold", "nan"], "argument --threshold: score threshold must be a number from 0 to 1, "
                                                 "got nan"),
    (["camera", "m.tflite", "--source", "0", "--threshold", "-0.5"], "argument --threshold: score threshold must be "
                                                                     "a number from 0 to 1, got -0.5"),
    (["train", "--batch-size", "0"], "argument --batch-size: batch size must be an integer from 1 to 1024, got 0"),
    (["train", "--steps", "0"], "argument --steps: step count must be an integer from 1 to 100000000, got 0"),
    (["train", "--lr", "-0.1"], "argument --lr: learning rate must be a number above 0 and at most 10, got -0.1"),
])
def test_the_issues_numbers_are_one_line_errors(cli_in_fresh_process, tmp_path, argv, message):
    [result] = cli_in_fresh_process([argv], tmp_path)
    assert result["code"] == 2 and not result["heavy"]
    assert result["stderr"].splitlines() == [f"ssdkit {argv[0]}: error: {message} (see ssdkit {argv[0]} --help)"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("limit_name, text, message", [
    ("score_threshold", "2", "score threshold must be a number from 0 to 1, got 2"),
    ("score_threshold", "nan", "score threshold must be a number from 0 to 1, got nan"),
    ("iou_threshold", "0", "IoU threshold must be a number above 0 and at most 1, got 0"),
    ("num_classes", "0", "number of classes must be an integer from 1 to 2000, got 0"),
    ("steps", "0", "step count must be an integer from 1 to 100000000, got 0"),
    ("batch_size", "1.5", "batch size must be an integer from 1 to 1024, got '1.5'"),
    ("learning_rate", "-0.1", "learning rate must be a number above 0 and at most 10, got -0.1"),
    ("retries", "-1", "retry count must be an integer of at least 0, got -1"),
])
def test_limit_messages_say_the_range_and_the_value(limit_name, text, message):
    with pytest.raises(ValueError) as error:
        LIMITS[limit_name].parse(text)
    assert str(error.value) == message


def test_limits_accept_their_bounds_and_reject_what_is_not_a_number():
    assert LIMITS["score_threshold"].check(0.0) == 0.0 and LIMITS["score_threshold"].check(1) == 1
    assert LIMITS["input_side"].check(1280) == 1280 and not LIMITS["input_side"].accepts(1281)
    assert not LIMITS["learning_rate"].accepts(0.0) and LIMITS["learning_rate"].accepts(1e-9)
    for value in (math.nan, math.inf, "0.5", None, True, [1]):
        assert not LIMITS["score_threshold"].accepts(value)
    assert not LIMITS["steps"].accepts(2.5) and LIMITS["steps"].accepts(2.0)
    limits.check(score_threshold=None, threads=None)  # not given: nothing to check
    with pytest.raises(ValueError, match="thread count must be an integer from 1 to 256, got 0"):
        limits.check(score_threshold=0.5, threads=0)


def test_detector_and_detect_reject_a_threshold_with_the_same_words(cli_in_fresh_process, tmp_path):
    from ssdkit.runtime import Detector

    with pytest.raises(ValueError) as error:
        Detector(tmp_path / "missing.tflite", score_threshold=2)
    [result] = cli_in_fresh_process([["detect", "m.tflite", "images", "--threshold", "2"]], tmp_path)
    assert result["code"] == 2
    assert result["stderr"].strip() == f"ssdkit detect: error: argument --threshold: {error.value} (see ssdkit detect --help)"
    assert str(error.value) == "score threshold must be a number from 0 to 1, got 2"


def test_help_of_every_command_imports_no_tensorflow(cli_in_fresh_process, tmp_path):
    commands = [list(words) for words, _ in _commands(build_parser())]
    results = cli_in_fresh_process([["--help"]] + [words + ["--help"] for words in commands], tmp_path)
    for result in results:
        assert result["code"] == 0 and not result["heavy"], result


def test_errors_found_after_parsing_come_before_tensorflow(cli_in_fresh_process, tmp_path):
    """Checks the handlers make before importing the converter; each is one line."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    coco = tmp_path / "dup.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}, '
                    '{"id": 1, "file_name": "b.jpg", "height": 4, "width": 4}], "annotations": [], "categories": []}')
    out = str(tmp_path / "out")
    cases = {
        ("export", "--format", "caffe", "--out", out): "unknown format 'caffe'; expected one of savedmodel, tflite, onnx",
        ("export", "--model", "ssd_mnv9", "--out", out): "unknown model 'ssd_mnv9'",
        ("export", "--model", "ssd_mnv2_fpnlite", "--input-size", "300", "--out", out):
            "input size 300x300 is not supported by ssd_mnv2_fpnlite: each side must be a multiple of 32 from 32 to 1280",
        ("export", "--num-classes", "3", "--labels", str(blocker), "--out", out): "give --labels or --num-classes, not both",
        ("export", "--format", "tflite", "--quant", "int4", "--out", out): "unknown quantization 'int4'",
        ("export", "--format", "onnx", "--quant", "fp16", "--out", out): "ONNX export supports --quant fp32 or int8, not 'fp16'",
        ("export", "--format", "tflite", "--io", "int4", "--out", out): "unknown I/O type 'int4'",
        ("export", "--format", "tflite", "--quant", "fp16", "--edgetpu", "--out", out): "the Edge TPU runs full-integer models only",
        ("export", "--keep-float", "auto", "--no-report", "--out", out): "--keep-float auto works from the quantization report",
        ("export", "--out", str(blocker / "sub")): "cannot create the output folder",
        ("train", "--model", "ssd_mnv9"): "unknown model 'ssd_mnv9'",
        ("train", "--model", "ssd_mnv2_fpnlite", "--input-size", "300"): "must be a multiple of 32",
        ("train", "--data", str(tmp_path / "missing.json")): "missing.json: dataset not found",
        ("train", "--data", str(coco), "--out", out): "image id 1 is used twice (entries 1 and 2); ids must be unique",
        ("train", "--strategy", "gpu"): "argument --strategy: invalid choice: 'gpu'",
    }
    results = cli_in_fresh_process([list(argv) for argv in cases], tmp_path)
    for (argv, message), result in zip(cases.items(), results):
        lines = result["stderr"].splitlines()
        assert result["code"] == 2 and len(lines) == 1 and message in lines[0], (argv, lines)
        assert not TENSORFLOW & set(result["heavy"]), (argv, result["heavy"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.json", "file"]  # nothing written


def test_the_readme_table_says_every_range():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [f"| {limit.words} | {limit.span()} |" for limit in LIMITS.values()
               if f"| {limit.words} | {limit.span()} |" not in readme]
    assert not missing, missing
