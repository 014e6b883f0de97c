"""Start-up cost of the device runtime against TensorFlow's.

Each measurement runs in a fresh interpreter, so imports and memory do not
leak between them: the time and RSS growth of ``import ssdkit.runtime`` plus
loading a model into a ``Detector``, against ``import tensorflow`` plus
loading the same model with ``tf.lite.Interpreter``. Target (issue 4): well
under a second and under 100 MB RSS on top of the interpreter.

    python benchmarks/import_memory.py MODEL.tflite
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PROBE = r"""
import json, resource, sys, time

def rss_mb():
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

which, model = sys.argv[1], sys.argv[2]
before, start = rss_mb(), time.perf_counter()
if which == "interpreter":
    from ai_edge_litert.interpreter import Interpreter
    Interpreter(model_path=model).allocate_tensors()
elif which == "ssdkit":
    from ssdkit.runtime import Detector
    Detector(model)
else:
    import tensorflow as tf
    tf.lite.Interpreter(model_path=model).allocate_tensors()
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": rss_mb() - before}))
"""


def probe(which: str, model: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", PROBE, which, model], capture_output=True, text=True, check=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .tflite file exported by ssdkit")
    args = parser.parse_args()
    bare, ours, tf = (probe(which, args.model) for which in ("interpreter", "ssdkit", "tensorflow"))
    for name, r in (("ai-edge-litert alone", bare), ("ssdkit.runtime", ours), ("tensorflow", tf)):
        print(f"{name:22s} import + load {r['seconds']:.2f} s, RSS +{r['rss_mb']:.0f} MB")
    print(f"ssdkit.runtime on top of the interpreter: +{ours['seconds'] - bare['seconds']:.2f} s, "
          f"+{ours['rss_mb'] - bare['rss_mb']:.0f} MB (targets: < 1 s, < 100 MB)")
    print(f"ssdkit.runtime / tensorflow: time {ours['seconds'] / tf['seconds']:.2f}, RSS {ours['rss_mb'] / tf['rss_mb']:.2f}")


if __name__ == "__main__":
    main()
