# The few verbs people type. Everything runs from a local virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test test-django-latest check lint typecheck bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/postroom serve --dev

test: $(STAMP) browser
	$(BIN)/pytest

# The Django tests on the newest Django, which needs Python 3.12+ (the main venv keeps the LTS).
# Python 3.12 deprecates the numbered SQLite placeholders the SQLite queue uses: ignored here.
PYTHON312 ?= python3.12
LATEST  = .venv-django-latest
$(LATEST)/.installed: pyproject.toml
	$(PYTHON312) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet -e '.[dev]' 'Django>=6.1'
	touch $(LATEST)/.installed

test-django-latest: $(LATEST)/.installed
	$(LATEST)/bin/pytest -W "ignore:Binding:DeprecationWarning" tests/contrib tests/unit/test_testing.py

# The dashboard's browser test drives Debian's Chromium; install it when it is missing and we
# may (root, apt-get present). Otherwise that test skips with the reason (fails under CI=true).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "chromium / chromedriver missing: the browser test will skip (apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(LATEST) .postroom .pytest_cache .mypy_cache .ruff_cache
