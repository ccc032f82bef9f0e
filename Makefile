# Two commands do all set-up on a fresh machine: `make run` (the main job) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup run test lint validate dev home clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

home:
	@mkdir -p "$(DAGSTER_HOME)"
	@[ -e "$(DAGSTER_HOME)/dagster.yaml" ] || ln -s "$(CURDIR)/dagster.yaml" "$(DAGSTER_HOME)/dagster.yaml"

run: setup home
	$(BIN)/mindex run

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .

validate: setup home
	$(BIN)/dagster definitions validate -w workspace.yaml

dev: setup home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) .dagster_home data

bench: setup
	$(BIN)/python bench/mirror_throughput.py
