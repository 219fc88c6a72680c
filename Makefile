# agentsim: `make run` and `make test` are all a fresh clone needs (Python >= 3.11).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= dev
# one stamp per set of extras, so `make test EXTRAS=dev,calibrate` installs what it needs
STAMP  := $(VENV)/.installed-$(EXTRAS)

.PHONY: run test lint format bench papers keynote regress install native clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[$(EXTRAS)]" --config-settings editable_mode=compat
	@touch $(STAMP)

# The compiled event loop (sim/common/native.py): mypyc builds the event loop's hot path
# (the replica, its KV cache, the cluster, the driver) into build/native/ whenever it
# changes; without a C compiler agentsim runs those modules as Python (same results,
# slower).  AGENTSIM_NATIVE=0 runs them as Python anyway.
NATIVE     := build/native/manifest.json
NATIVE_SRC := sim/engine/kvcache.py sim/engine/replica.py sim/cluster/cluster.py sim/simulation.py \
              sim/common/native.py scripts/build_native.py

# (after every install too: a new .venv may hold another Python or another mypyc)
$(NATIVE): $(NATIVE_SRC) $(STAMP)
	$(PY) scripts/build_native.py

native: $(NATIVE)

install: $(STAMP) $(NATIVE)

run: $(STAMP) $(NATIVE)
	$(VENV)/bin/agentsim run $(ARGS)

test: $(STAMP) $(NATIVE)
	$(PY) -m pytest $(PYTEST_ARGS)

# scripts/check_layers.py: the layer order of docs/ARCHITECTURE.md's module map, no import
# cycles, no function over 80 lines without a '# long: <reason>' comment
lint: $(STAMP)
	$(VENV)/bin/ruff check sim policies tests benchmarks notebooks/keynote.py scripts setup.py
	$(VENV)/bin/ruff format --check sim policies tests benchmarks notebooks/keynote.py scripts setup.py
	$(VENV)/bin/mypy
	$(PY) scripts/check_layers.py

format: $(STAMP)
	$(VENV)/bin/ruff check --fix sim policies tests benchmarks notebooks/keynote.py scripts setup.py
	$(VENV)/bin/ruff format sim policies tests benchmarks notebooks/keynote.py scripts setup.py

# The CI regression gate on scheduling metrics (see README, "Regression gate").
regress: $(STAMP) $(NATIVE)
	$(VENV)/bin/agentsim regress --baseline results/baselines/ci.json $(ARGS)

bench: $(STAMP) $(NATIVE)
	$(PY) benchmarks/run.py

# Reproductions of the agent-serving papers: results/papers/NAME.md (docs/papers.md)
papers: $(STAMP) $(NATIVE)
	$(PY) benchmarks/papers/run_all.py $(ARGS)

keynote: $(STAMP) $(NATIVE)
	$(PY) notebooks/keynote.py --out results/keynote

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
