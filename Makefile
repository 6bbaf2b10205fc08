# `make demo` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DEMO_OUT ?= demo-out
DEMO_PORT ?= 8765

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,train]'
	touch $(STAMP)

# Benchmark-only packages (psutil, the NCBI taxonomy) stay out of the test install.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,train,bench]'
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --out $(DEMO_OUT) --port $(DEMO_PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_images.py
	$(BIN)/python benchmarks/bench_sample_kit.py --scale 100000
	$(BIN)/python benchmarks/bench_taxonomy.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache *.egg-info
