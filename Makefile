# The README's two commands: `make run` and `make test`. Both set themselves up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node-sdk/node_modules/.installed

.PHONY: run test lint typecheck format setup lock wheel

# The client commands in the README need the core extension the Node SDK package ships.
run: $(STAMP) $(NODE_STAMP)
	$(BIN)/papyrus dev

test: $(STAMP) $(NODE_STAMP)
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --maxprocesses 4

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy, strict on all of src/ (configured in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .

setup: $(STAMP) $(NODE_STAMP)

# constraints.txt pins the versions the suite last passed with; `make lock` refreshes it.
# The development install: the client, the server and dev sync service (`server`), the tests.
$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[server,test]'
	touch $(STAMP)

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[server,test]'
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

# dist/papyrus-*.whl: the client SDK (plus the `server` extra), with the PowerSync core extension
# copied from node-sdk/ (setup.py); installs anywhere without Node.
wheel: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .

# The official PowerSync Node SDK (conformance tests) and the core extension it ships (Python client).
$(NODE_STAMP): node-sdk/package.json node-sdk/package-lock.json
	cd node-sdk && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)
