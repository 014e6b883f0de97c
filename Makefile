# ssdkit: the first use creates .venv and installs everything, so a fresh
# clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ByteTrack for `ssdkit camera --track`, without its opencv-python requirement (see pyproject.toml's track extra).
TRACKERS := trackers>=2.6,<3

MODEL ?= ssd_mnv2
WEIGHTS ?=
OUT ?= build/$(MODEL)/
QUANT ?= int8
PYTEST_ARGS ?=

WEIGHTS_ARG = $(if $(WEIGHTS),--weights $(WEIGHTS),)
# The int8 quantization report's data: COCO JSON, VOC folder or image folder (see README.md).
EVAL_DATA ?=
EVAL_DATA_ARG = $(if $(EVAL_DATA),--eval-data $(EVAL_DATA),)
FORCE_ARG = $(if $(FORCE),--force,)
# LAYER_ERRORS=1: the int8 layers' error as node data for `ssdkit explore` (the quantization debugger; slower export).
LAYER_ERRORS_ARG = $(if $(LAYER_ERRORS),--layer-errors,)

DATA ?=
STEPS ?= 20000

.PHONY: help venv test savedmodel tflite onnx all clean train qat demo-weights bench zoo-costs

help:
	@echo "make tflite MODEL=ssd_mnv2   export the model (see README.md)"
	@echo "make test                    run the test suite"
	@echo "make savedmodel | onnx | all | clean | train DATA=coco.json|voc_dir | qat WEIGHTS=ckpt.npz | demo-weights | bench | soak"
	@echo "make pi-check                the runtime on Raspberry Pi OS (Debian arm64) under qemu, no Pi needed"
	@echo "variables: MODEL (ssd_mnv2), WEIGHTS, OUT (build/\$$(MODEL)/), QUANT (int8), FORCE (1: replace another model's files in OUT), EVAL_DATA (the int8 report's data), LAYER_ERRORS (1: node data for ssdkit explore)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	$(BIN)/python -m pip install --quiet --no-deps '$(TRACKERS)'
	@# A venv made before this rule: drop the opencv-python trackers pulled in and restore the headless cv2/ it overwrote.
	if $(BIN)/python -m pip show opencv-python >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall --quiet -y opencv-python && \
		$(BIN)/python -m pip install --quiet --force-reinstall --no-deps 'opencv-python-headless>=4.8'; fi
	touch $@

venv: $(STAMP)

# Two workers (pytest-xdist), one test file each at a time: module fixtures (exports) are built once.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

savedmodel: $(STAMP)
	$(BIN)/ssdkit export --model $(MODEL) --format savedmodel --out $(OUT) $(WEIGHTS_ARG) $(FORCE_ARG)

tflite: $(STAMP)
	$(BIN)/ssdkit export --model $(MODEL) --format tflite --quant $(QUANT) --out $(OUT) $(WEIGHTS_ARG) $(FORCE_ARG) $(EVAL_DATA_ARG) $(LAYER_ERRORS_ARG)

onnx: $(STAMP)
	$(BIN)/ssdkit export --model $(MODEL) --format onnx --out $(OUT) $(WEIGHTS_ARG) $(FORCE_ARG)

all: savedmodel tflite onnx

# Train MODEL on a COCO JSON (default: the built-in synthetic shapes).
train: $(STAMP)
	$(BIN)/ssdkit train --model $(MODEL) $(if $(DATA),--data $(DATA),) --steps $(STEPS) --out build/train/$(MODEL) --resume

# Quantization-aware fine-tuning of a trained float checkpoint (WEIGHTS, default:
# what `make train MODEL=...` wrote), on DATA (default: the synthetic shapes);
# then `make tflite WEIGHTS=build/train/$(MODEL)_qat/$(MODEL).npz` exports full-integer
# TFLite with the trained ranges (no calibration). See README.md, "Quantization-aware training".
# `train --qat` defaults: batch norm measured afresh then frozen, learning rate 0.0003 decaying, no warmup.
QAT_STEPS ?= 2000
qat: $(STAMP)
	$(BIN)/ssdkit train --qat --weights $(if $(WEIGHTS),$(WEIGHTS),build/train/$(MODEL)/$(MODEL).npz) \
		$(if $(DATA),--data $(DATA),) --steps $(QAT_STEPS) --batch-size 16 \
		--out build/train/$(MODEL)_qat --resume

# The recipe of the shipped demo weights: ssd_mnv2 300x300 on synthetic shapes.
# About 15 images/s on a 2-core machine (~1h30); resumable (run it again after a stop).
demo-weights: $(STAMP)
	$(BIN)/ssdkit train --model ssd_mnv2 --steps 5000 --batch-size 16 --lr 0.08 --warmup-steps 300 \
		--eval-every 500 --eval-images 100 --checkpoint-every 200 --out build/train/demo --resume

# Project performance targets as ratios measured in one run -> benchmarks/RESULTS.md (~5 min).
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache

# The parameter and FLOP counts `ssdkit models` prints (convert/data/zoo_costs.json):
# builds every zoo network once (~1 min). Run after changing a network.
zoo-costs: $(STAMP)
	$(BIN)/python tools/zoo_costs.py

# The camera loop's soak tests: 4000 frames from a video file with every
# output on (then again with tracking, zones, MQTT to a local broker and
# snapshots); resident memory must stay flat. Not part of `make test`.
.PHONY: soak
soak: $(STAMP)
	SSDKIT_SOAK=1 $(BIN)/python -m pytest -rP tests/runtime/test_camera.py::test_soak_memory_stays_flat \
		tests/runtime/test_camera_events.py::test_soak_with_every_event_output_memory_stays_flat $(PYTEST_ARGS)

# The device runtime on a Debian bookworm arm64 root under qemu-user (cached in
# ~/.cache/ssdkit): detect with an int8 MODEL (WEIGHTS if given) and the runtime's
# tests. Not part of `make test`: see README.md for how long it takes.
.PHONY: pi-check
pi-check: $(STAMP)
	$(BIN)/python tools/pi_check.py --model $(MODEL) $(WEIGHTS_ARG)

# Import a TF OD API SSD model (folder, .tar.gz, frozen graph, checkpoint or zoo name)
# with a parity check against it: make import SRC=ssd_mobilenet_v2_coco_2018_03_29 [OUT=build/import/NAME]
SRC ?=
.PHONY: import import-check import-int8-check
import: $(STAMP)
	@test -n "$(SRC)" || (echo "make import SRC=PATH_OR_ZOO_NAME [OUT=DIR]"; exit 2)
	$(BIN)/ssdkit import $(SRC) $(if $(filter build/$(MODEL)/,$(OUT)),,--out $(OUT))

# The import round trip of every importable architecture at full size (300x300 /
# 320x320, width 1.0, random weights): source build, import time, parity. Not part of `make test`.
import-check: $(STAMP)
	$(BIN)/python tools/import_check.py

# After import, int8 TFLite against fp32 TFLite per architecture (detection agreement on the
# synthetic validation images and the photos); trained weights where ssdkit has them. Not in `make test`.
import-int8-check: $(STAMP)
	$(BIN)/python tools/import_int8_check.py
