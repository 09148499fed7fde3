# The README's two commands: `make study` (set up, then run the study on the embedded
# dataset) and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
# DATASET=cifar10 (or npz:<path>) runs the series on that dataset instead of the profile's.
DATASET ?=
# Notebooks run at a time (each kernel gets an equal share of the cores).
JOBS ?= 2
STAMP := $(VENV)/.studykit-installed

.PHONY: study test install lint bench bench-gpu clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	# The registry's torchvision needs the registry's torch; fail here, not in the tests.
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

study: $(STAMP)
	$(VENV)/bin/studykit study --profile $(PROFILE) --jobs $(JOBS) $(if $(DATASET),--dataset $(DATASET))

# pytest-xdist spreads the suite over the cores (pyproject's addopts); the slowest tests are
# listed at the end, so a test that grows shows up there.
test: $(STAMP)
	$(PY) -m pytest -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check studykit tests benchmarks

# CPU-sized defaults on a CPU (the paper-sized settings with --device cuda, or with the
# options each script names): about 2 minutes on 2 cores.
bench: $(STAMP)
	$(PY) benchmarks/corruption_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/augmix_throughput.py --breakdown
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/frost_statistics.py
	$(PY) benchmarks/explorer_latency.py
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/kernel_share.py

# One short session on a CUDA machine (under 8 minutes): the gpu-marked tests, then the
# training throughput of every notebook's runs under its paper recipe (one GPU, then torchrun
# over all GPUs when there are several), printed even when tests fail; the exit status is the
# first failure's. No install step, so it also runs where a machine brings its own torch and no
# registry can be reached: the venv's Python when there is one, else python3 (BENCH_PY=...
# overrides), with the package imported from the checkout. Without CUDA, both steps skip. The
# tests run in one process (`-o addopts=` drops pyproject's pytest-xdist options: such a
# python3 may not have it, and one GPU is one device).
BENCH_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_TEST_TIMEOUT ?= 150
GPU_BENCH_TIMEOUT ?= 300
GPU_BENCH_ARGS ?=

bench-gpu:
	@tests=0; bench=0; \
	echo "== pytest -m gpu (at most $(GPU_TEST_TIMEOUT) s)"; \
	PYTHONPATH=. timeout -k 10 $(GPU_TEST_TIMEOUT) $(BENCH_PY) -m pytest -m gpu -q -o addopts= \
		-p no:cacheprovider --continue-on-collection-errors tests || tests=$$?; \
	echo "== benchmarks/gpu_bench.py (at most $(GPU_BENCH_TIMEOUT) s)"; \
	PYTHONPATH=. PYTHONUNBUFFERED=1 timeout -k 10 $(GPU_BENCH_TIMEOUT) $(BENCH_PY) \
		benchmarks/gpu_bench.py $(GPU_BENCH_ARGS) || bench=$$?; \
	echo "== bench-gpu: pytest exit $$tests, gpu_bench exit $$bench (124: timed out)"; \
	[ $$tests -eq 0 ] && exit $$bench; exit $$tests

clean-venv:
	rm -rf $(VENV)
