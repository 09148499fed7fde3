# The README's two commands: `make study` (set up, then run the study on the embedded
# dataset) and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
STAMP := $(VENV)/.studykit-installed

.PHONY: study test install lint bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	# The registry's torchvision needs the registry's torch; fail here, not in the tests.
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

study: $(STAMP)
	$(VENV)/bin/studykit study --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check studykit tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/corruption_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/augmix_throughput.py --breakdown
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/frost_statistics.py

clean-venv:
	rm -rf $(VENV)
