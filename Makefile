# The two commands a fresh clone needs: `make dashboard` and `make test` (CI adds test-system, test-load).
# Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: dashboard test test-system test-load demo clean-venv

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

dashboard: $(BIN)/.installed  ## open the dashboard (generates the demo dataset on first use)
	@test -f data/demo/.complete || { $(BIN)/python -m poc demo-data data/demo --per-class 40 --size 96 && touch data/demo/.complete; }
	$(BIN)/streamlit run dashboard.py --server.port $(PORT)

test: $(BIN)/.installed  ## the test suite (unit, end-to-end tiny runs, AppTest), two workers
	$(BIN)/python -m pytest

test-system: $(BIN)/.installed  ## the system tier: real browser, Ray cluster, multi-process training, kills (minutes)
	$(BIN)/python -m pytest -m "system and not load"

test-load: $(BIN)/.installed  ## the load test alone: 4 browser sessions while a training job runs (about a minute)
	$(BIN)/python -m pytest -m load -n 0

demo: $(BIN)/.installed  ## demo data + one CNN and one ViT run on the CPU, a few minutes
	$(BIN)/python -m poc demo

clean-venv:
	rm -rf $(VENV)
