# cartflow — the commands a newcomer needs. Everything installs itself on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install jars lint fmt demo up test test-unit test-integration test-e2e bench bench-e2e deploy clean

# A line per step; pip's output (setuptools warnings included) goes to $(VENV)/install.log,
# printed in full only when a step fails.
PIP_QUIET = --quiet --disable-pip-version-check --no-warn-script-location
$(STAMP): pyproject.toml
	@echo "install [1/3] virtualenv $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@echo "install [2/3] pip upgrade"
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@echo "install [3/3] cartflow (editable) + spark, test, release, dashboard extras (first time: a few minutes)"
	@$(PY) -m pip install $(PIP_QUIET) -e ".[spark,test,release,dashboard]" >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)
	@echo "install done (log: $(VENV)/install.log)"

install: $(STAMP)

jars: $(STAMP)  ## pinned Spark jars (Delta, hadoop-aws, AWS SDK) from Maven Central, once; the driver's class archive
	$(PY) spark/fetch_jars.py
	$(PY) -m cartflow.local.spark_class_archive

lint: install  ## ruff (lint + format check), mypy, import contracts (pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: install  ## apply the formatter and the safe lint fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: install jars  ## whole loop locally: emulator + functions + Spark, fixtures in, KPIs out, all stopped
	$(PY) -m cartflow demo

up: install jars  ## same, but keeps running (Ctrl-C stops)
	$(PY) -m cartflow up

# Unit + integration on two workers, one test module per worker at a time (module-scoped
# emulator and Spark session; most integration time is waiting on real batches). Then e2e in
# a session of its own: its session environment (short windows) must not reach the others.
# Its modules also run two at a time: most of their time is waiting on containers, ticks
# and cold JVMs, and each worker has its own compose project, registry and ports.
test: install jars  ## unit + integration (real emulator, real Spark) + e2e (Docker; fails under CI=true without it)
	$(PY) -m pytest -n 2 --dist loadfile --durations=25 tests/unit tests/integration
	$(PY) -m pytest -n 2 --dist loadfile --durations=15 tests/e2e

test-unit: install
	$(PY) -m pytest -n 2 tests/unit

test-integration: install jars
	$(PY) -m pytest tests/integration

test-e2e: install
	$(PY) -m pytest tests/e2e

bench: install jars  ## Spark jobs vs DuckDB vs polars at 100k,1M,2M rows (docs/benchmarks.md); ARGS="--sizes 100k,1M,2M,10M"
	$(PY) -m bench $(ARGS)

bench-e2e: install jars  ## end-to-end latency, start time and idle memory of the embedded stack (100k rows)
	$(PY) -m bench.e2e $(ARGS)

deploy: install  ## build, push, deploy to AWS (docs/deploy.md): make deploy STACK=cartflow REGION=eu-west-1 [ARGS=--dry-run]
	$(PY) -m cartflow deploy --stack $(STACK) --region $(REGION) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
