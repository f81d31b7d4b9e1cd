# Developer entry points. `make demo` installs the plugin and builds a fixture; `make test` runs
# the checks CI runs. Both prepare what they need (a venv, a Docker engine, the stand-in image).
VENV ?= .venv
BIN := $(VENV)/bin
STAND_IN := poetry-lambda-zip/stand-in:python3.11-x86_64

.PHONY: demo test lint engine release-check clean

$(BIN)/poetry: pyproject.toml
	@echo "Creating $(VENV) with Poetry, the plugin (editable) and the test tools ..."
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar off --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e ".[sbom]" --group test
	touch $@

engine:
	scripts/docker-engine.sh

demo: $(BIN)/poetry engine
	$(BIN)/poetry -C fixtures/binary-wheel lambda-zip --runtime python3.11 --image $(STAND_IN)

lint: $(BIN)/poetry
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

test: lint engine release-check
	$(BIN)/python -m pytest

# The release artefacts, built and checked as a release would be (CI runs this too).
release-check: $(BIN)/poetry
	$(BIN)/python -m pip install --progress-bar off --group release
	scripts/release-check.sh

clean:
	rm -rf $(VENV) fixtures/*/dist .mypy_cache .ruff_cache .pytest_cache
