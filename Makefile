# ssdkit: the first use creates .venv and installs everything, so a fresh
# clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

MODEL ?= ssd_mnv2
WEIGHTS ?=
OUT ?= build/$(MODEL)/
QUANT ?= int8
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

WEIGHTS_ARG = $(if $(WEIGHTS),--weights $(WEIGHTS),)

.PHONY: help venv test savedmodel tflite onnx all clean

help:
	@echo "make tflite MODEL=ssd_mnv2   export the model (see README.md)"
	@echo "make test                    run the test suite"
	@echo "make savedmodel | onnx | all | clean"
	@echo "variables: MODEL (ssd_mnv2), WEIGHTS, OUT (build/\$$(MODEL)/), QUANT (int8)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

savedmodel: $(STAMP)
	$(BIN)/ssdkit export --model $(MODEL) --format savedmodel --out $(OUT) $(WEIGHTS_ARG)

tflite: $(STAMP)
	$(BIN)/ssdkit export --model $(MODEL) --format tflite --quant $(QUANT) --out $(OUT) $(WEIGHTS_ARG)

onnx: $(STAMP)
	$(BIN)/ssdkit export --model $(MODEL) --format onnx --out $(OUT) $(WEIGHTS_ARG)

all: savedmodel tflite onnx

clean:
	rm -rf build .pytest_cache
