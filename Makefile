# Everything runs in .venv, created and filled on first use (CPU torch, pinned versions).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo demo-causal demo-families docs docs-results docs-screenshots lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q "torch==2.13.0" -c constraints.txt
	$(PIP) install -q -e ".[dev]" -c constraints.txt
	# WordNet for METEOR, offline (Debian's packages into the venv's NLTK data folder).
	bash scripts/install_wordnet.sh $(VENV)/nltk_data
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

demo: install
	$(PY) -m benchmark suite --preset demo

# The demo on its decoder-only counterpart (a Llama-style base, docs/demo.md's causal section).
demo-causal: install
	$(PY) -m benchmark suite --preset demo-causal

# Both families' demos, then one report of both in reports/families/: a table per family, each
# tested against its own base (docs/demo.md, both families in one report).
demo-families: install
	$(PY) -m benchmark suite --preset demo --no-report
	$(PY) -m benchmark suite --preset demo-causal --no-report
	$(PY) -m benchmark compare --filter "tags.preset LIKE 'demo%'" --out reports/families

# The documentation site (MkDocs, strict: a broken link or page is an error) in build/site/.
docs: install
	$(PY) scripts/docs_hooks.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The README's results tables from the newest demo suite in the store (after `make demo`), and
# the MLflow UI screenshots of docs/mlflow-ui.md (needs Debian's chromium).
docs-results: install
	$(PY) scripts/docs_results.py --collect --render

docs-screenshots: install
	$(PY) scripts/ui_screenshot.py

lock: install
	$(PIP) freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt.new
	{ head -1 constraints.txt; cat constraints.txt.new; } > constraints.txt && rm constraints.txt.new

clean:
	rm -rf $(VENV) mlruns mlflow.db reports/latest
