# The two commands of the README, and what CI runs (.ci/run calls `make test`).
VENV ?= .venv
PIP = $(VENV)/bin/pip install -q -c constraints/cpu.txt
PROMPT ?= 27 88 25 84 2

.PHONY: solve test install install-dev lint

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

install: $(VENV)/bin/python
	$(PIP) -e '.[local]'

install-dev: $(VENV)/bin/python
	$(PIP) -e '.[local,train,dev]'

solve: install
	$(VENV)/bin/spawnjoin solve "$(PROMPT)"

test: install-dev
	$(VENV)/bin/ruff check spawnjoin training tests benchmarks examples
	$(VENV)/bin/mypy spawnjoin training
	$(VENV)/bin/python -m pytest -q

lint: install-dev
	$(VENV)/bin/ruff check spawnjoin training tests benchmarks examples
	$(VENV)/bin/mypy spawnjoin training
