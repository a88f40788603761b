# The two commands: `make run` and `make test`. Both set up .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch is pinned: this version is a CPU build; a looser request pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# The suite runs on the oldest rq that pyproject.toml allows (tests/test_packaging.py checks).
RQ     ?= rq==3.0.0
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint bench demo-checkpoint demo-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]' $(TORCH) $(RQ)
	touch $(STAMP)

run: setup
	$(VENV)/bin/videopoet serve

test: setup
	$(VENV)/bin/python -m pytest -q tests

# ruff's lint and format check over every package, mypy over the service (pyproject [tool.mypy]).
LINTED := app cli core workers models research tests benchmarks
lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/models.py

# The demo checkpoint's recipe (README: "Training the demo checkpoint"). Resumable: run it again
# to go on. The two tokenizers train side by side, one thread each; then the LM; then the eval.
# MINUTES bounds each run (the cosine follows it); DEMO is the training folder.
DEMO    ?= out/demo
MINUTES ?= 60
TRAIN   := $(PY) -m models.train
demo-checkpoint: setup
	$(TRAIN) video-tokenizer --config demo --out $(DEMO) --resume --steps 20000 --batch 4 \
	  --image-batch 16 --foreground-weight 10 --foreground-margin 2 --chroma-weight 1 \
	  --entropy-tokens foreground --entropy-weight 0.05 --threads 1 --max-minutes $(MINUTES) & v=$$!; \
	$(TRAIN) audio-tokenizer --config demo --out $(DEMO) --resume --steps 20000 --batch 8 \
	  --crop-seconds 0.5 --threads 1 --max-minutes $(MINUTES) & a=$$!; \
	wait $$v && wait $$a
	$(TRAIN) lm --config demo --out $(DEMO) --resume --steps 10000 --batch 8 --clips 800 --lr 2e-3 \
	  --max-minutes $(MINUTES)
	$(PY) -m models.evaluate --model $(DEMO) --n 24 --json $(DEMO)/eval.json

# The demo on one GPU (docs/training.md, "The demo on a GPU"): the tokenizers and a bigger LM in
# GPU_MINUTES, then the eval; everything in DEMO_GPU, which is the folder to copy back. Resumable.
DEMO_GPU    ?= out/demo-gpu
GPU_MINUTES ?= 10
demo-gpu: setup
	$(PY) -m models.train.recipe --out $(DEMO_GPU) --minutes $(GPU_MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache
