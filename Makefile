# Leap reproduction suite. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Data for runs and tests: ./data (torchvision downloads land there) unless LEAP_DATA_DIR says otherwise;
# .ci/run points it at the project's shared copy.
export LEAP_DATA_DIR ?= $(abspath data)

.DEFAULT_GOAL := help
.PHONY: help install lint format test test-fast quickstart smoke protocol table1 figures budget reproduce-budget reproduce-omniglot-small reproduce-omniglot table2 reproduce-multicv-small reproduce-multicv fig3 reproduce-atari-small reproduce-atari bench gpu-cell sync-wandb clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-26s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install the project with its test extras

lint: $(STAMP) ## ruff (lint and format check) on the code, mypy on src/ (CI runs it before the tests)
	$(BIN)/ruff check src scripts tests run.py
	$(BIN)/ruff format --check src scripts tests run.py
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src scripts tests run.py
	$(BIN)/ruff format src scripts tests run.py

test: $(STAMP) ## Set up, then run the whole test suite (what CI runs, after lint)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## Set up, then run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow"

quickstart: $(STAMP) ## Set up, then meta-train Leap on Omniglot (scale=small) and test it on held-out alphabets
	$(BIN)/python run.py experiment=omniglot method=leap scale=small

smoke: $(STAMP) ## Seconds-long run of every method on Omniglot, Multi-CV and Atari
	$(BIN)/python run.py -m experiment=omniglot 'method=glob(*)' scale=smoke progress=false
	$(BIN)/python run.py -m experiment=multicv method=leap,finetune,scratch scale=smoke progress=false
	$(BIN)/python run.py -m experiment=atari method=leap,reptile,scratch scale=smoke progress=false

protocol: $(STAMP) ## The adaptation-protocol study behind docs/protocol.md (5 splits, about 3 h on 2 cores; resumes)
	$(BIN)/python scripts/protocol_study.py

table1: $(STAMP) ## runs.csv, Table 1 and Fig. 2 (right) data with paired differences, from results/omniglot/small/, seconds
	$(BIN)/python scripts/make_table.py omniglot --scale small

figures: $(STAMP) ## Fig. 2 (left, right) as PNG and PDF from the committed results, seconds
	$(BIN)/python scripts/make_figures_omniglot.py --scale small

budget: $(STAMP) ## The budget study's table and figure from the committed results/omniglot/budget/budget.csv, seconds
	$(BIN)/python scripts/budget_study.py

reproduce-budget: $(STAMP) ## The budget study (15 runs + 6 at the authors' code's meta lr, about 3.5 h on 2 cores), then export, table and figure
	$(BIN)/python run.py +sweep=omniglot_budget
	$(BIN)/python run.py +sweep=omniglot_budget method=reptile method.meta_optimizer.lr=0.1 tag=-lr0.1
	$(BIN)/python run.py +sweep=omniglot_budget method=fomaml method.meta_optimizer.lr=0.5 tag=-lr0.5
	$(BIN)/python scripts/budget_study.py --collect runs

reproduce-omniglot-small: $(STAMP) ## The reduced Table 1 grid (about 2 h on 2 cores), then export, table and figures
	$(BIN)/python run.py +sweep=omniglot_small
	$(BIN)/python scripts/make_table.py omniglot --scale small --collect runs
	$(BIN)/python scripts/make_figures_omniglot.py --scale small

reproduce-omniglot: $(STAMP) ## The paper's Table 1 grid (960 runs; add ARGS=launcher=slurm on a cluster)
	$(BIN)/python run.py +sweep=omniglot_paper $(ARGS)
	$(BIN)/python scripts/make_table.py omniglot --scale paper --collect runs
	$(BIN)/python scripts/make_figures_omniglot.py --scale paper

table2: $(STAMP) ## Table 2 (Multi-CV) beside the paper's from the committed results (results/multicv/small/), seconds
	$(BIN)/python scripts/make_table.py multicv --scale small

reproduce-multicv-small: $(STAMP) ## The reduced Table 2 (6 held-out datasets x 3 methods x 3 seeds, ~1.5 h on 2 cores), then the table
	$(BIN)/python run.py +sweep=multicv_small
	$(BIN)/python scripts/make_table.py multicv --scale small --collect runs

reproduce-multicv: $(STAMP) ## The paper's Table 2 (8 x 3 x 3 runs at scale=paper; needs SVHN and CIFAR-100; ARGS=launcher=slurm)
	$(BIN)/python run.py +sweep=multicv_paper $(ARGS)
	$(BIN)/python scripts/make_table.py multicv --scale paper --collect runs

fig3: $(STAMP) ## Fig. 3 (Atari) and its table from the committed results (results/atari/small/), seconds
	$(BIN)/python scripts/make_table.py atari --scale small
	$(BIN)/python scripts/make_figure_atari.py --scale small

reproduce-atari-small: $(STAMP) ## The reduced Fig. 3 (Leap and random init, 2 seeds, ~2 h on 2 cores), then the figure
	$(BIN)/python run.py +sweep=atari_small
	$(BIN)/python scripts/make_figure_atari.py --scale small --collect runs

reproduce-atari: $(STAMP) ## Fig. 3 at the paper's scale (weeks of CPU; ARGS=launcher=slurm, or torchrun per run)
	$(BIN)/python run.py +sweep=atari_paper $(ARGS)
	$(BIN)/python scripts/make_figure_atari.py --scale paper --collect runs

bench: $(STAMP) ## Benchmarks (about 10 min): Leap overhead, vs the reference approach, batched tasks, 2-rank scaling, Atari frames/s
	$(BIN)/python scripts/bench_leap.py
	$(BIN)/python scripts/bench_distributed.py
	$(BIN)/python scripts/bench_atari.py --threads 1 --seconds 30
	$(BIN)/python scripts/bench_atari.py --threads 2 --seconds 30 --out results/bench/atari_2threads.json

gpu-cell: $(STAMP) ## A paper-scale Omniglot cell on one GPU (Leap, 20 tasks, and no pretraining): checks, timing, at most 9 min
	PY=$(BIN)/python bash scripts/gpu_paper_cell.sh $(ARGS)

sync-wandb: ## Upload offline W&B runs under runs/, each run's resumed segments in order (needs network and a W&B login)
	$(BIN)/python scripts/sync_wandb.py runs

clean: ## Remove caches (keeps runs/ and results/)
	rm -rf .cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
