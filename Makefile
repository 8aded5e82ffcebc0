# fusecube developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-out

.PHONY: demo test test-deps bench bench-peers bench-fusion-peers lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build from the local wheel cache; GPU users keep their own torch (pyproject says torch>=2.3)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fusecube demo --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

# the lowest and the newest numpy/xarray/zarr/dask that pyproject.toml allows, each in its own
# virtualenv (.venv-lowest, .venv-newest) running a fast part of the suite; docs/dependencies.md
test-deps:
	PYTHON=$(PYTHON) scripts/test_deps.sh lowest
	PYTHON=$(PYTHON) scripts/test_deps.sh newest

bench: $(STAMP)
	$(PY) benchmarks/bench_pipeline.py

# peers (FuseTS, TIMESAT, whittaker-eilers) in their own virtualenvs, never runtime dependencies
bench-peers: $(STAMP)
	OMP_NUM_THREADS=1 benchmarks/peers/setup_venvs.sh
	OMP_NUM_THREADS=1 $(PY) benchmarks/peers/compare.py

# fusion vs FuseTS MOGPR (GPy in the FuseTS peer venv): real field series + synthetic crop
bench-fusion-peers: $(STAMP)
	OMP_NUM_THREADS=1 benchmarks/peers/setup_venvs.sh
	OMP_NUM_THREADS=1 $(PY) benchmarks/peers/fusion_compare.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
