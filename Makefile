# Quick start: `make run` (set up + launch the app), `make test` (set up + run the tests).
PYTHON ?= python3.11
STREAMLIT_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
SYSTEM_STAMP := .venv/.system-packages

.PHONY: run test setup setup-dev system-packages bench lint clean

$(STAMP): requirements.txt
	@# Debian/Ubuntu ship ensurepip apart (python3.11-venv): without it venv leaves a .venv without pip
	@test -x $(BIN)/pip || $(PYTHON) -c "import ensurepip" 2>/dev/null || { echo "$(PYTHON) cannot make a virtual \
	environment with pip (no ensurepip); on Debian/Ubuntu: apt-get install python3.11-venv" >&2; exit 1; }
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(STAMP)
setup-dev: $(DEV_STAMP)

# Debian packages for the Fashion-MNIST data and the browser tests (needs root, as on CI).
system-packages:
	bash scripts/install-system-packages.sh

run: setup
	$(BIN)/streamlit run app.py $(STREAMLIT_ARGS)

test: setup-dev system-packages
	$(BIN)/python -m pytest -q

bench: setup-dev
	$(BIN)/python -m bench --short

lint: setup-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
