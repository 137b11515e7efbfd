# PrefLoop: `make run` sets up everything and serves the app with its workers; `make test` sets up and runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DJANGO_SETTINGS_MODULE := prefloop.settings

.PHONY: run test setup services lint clean-var

$(STAMP): requirements.txt requirements-base.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py bootstrap_model
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python manage.py load_demo

run: setup
	$(BIN)/python -m prefloop.serve

test: $(STAMP)
	@if [ -n "$$CI" ]; then $(MAKE) services; fi
	bash scripts/test.sh

services:
	bash scripts/services.sh

lint: $(STAMP)
	$(BIN)/ruff check .

clean-var:
	rm -rf var
