# Two commands on a fresh clone with Python 3.11 and make:
#   make serve   set up .venv, import the embedded default model, then the LLM sidecar on
#                :11434, the Bento on :3000 and the Streamlit app on :8501 (Ctrl-C stops all)
#   make test    set up .venv, the model store and Chromium, run the whole test suite
# make help lists every target. The daily ones are here; the images, Compose and the
# delivery path are in docker/docker.mk, the benchmarks in benchmarks/benchmarks.mk.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
SIDECAR_PORT ?= 11434
SIDECAR_THREADS ?= 2
FRONTEND_PORT ?= 8501
# Debian packages some tests need: installed where root (or password-less sudo) can,
# else named with the command that installs them.
define apt_install
	@if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; else \
		echo "make $@ needs Debian's $(1), and installing it needs root. Run:"; \
		echo "  sudo apt-get update && sudo apt-get install -y $(1)"; exit 1; fi; \
	echo "Installing Debian's $(1)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(1)
endef
export OLLAMA_HOST ?= http://127.0.0.1:$(SIDECAR_PORT)
PYTEST_ARGS ?=
UV_VERSION := 0.13.9
# uv installs into this project's .venv (its default), with the venv's own Python.
# native-tls: the system CA store, as pip uses here (a TLS-intercepting proxy may sign PyPI).
UV := UV_PYTHON=$(BIN)/python UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=true $(BIN)/uv
# A portable llama.cpp build: the native one (GGML_NATIVE, the default) used
# AMX on this project's CI machines and segfaulted in its first decode.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

# A project-local model store and runtime config, so nothing leaks into ~/bentoml.
export BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_CONFIG ?= $(CURDIR)/configuration.yaml
export BENTOML_DO_NOT_TRACK := true
# As in the Bento image (bentofile.yaml envs): two malloc arenas, not one per thread.
export MALLOC_ARENA_MAX ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup model import-model serve ui sidecar stack frontend browser kubectl haproxy screenshots \
	test test-fast test-unit lint format build docs docs-reference api-docs test-api bruno test-local-api \
	test-deployed-api lock clean

help: ## this list
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_ %-]+:.*## / {printf "  %-34s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv is bootstrapped into the venv with pip, then installs exactly uv.lock (every group).
$(BIN)/.installed: pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
		|| { echo "Python 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	@echo "Installing; llama-cpp-python compiles llama.cpp the first time (several minutes)."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(UV) sync --locked
	touch $@

setup: $(BIN)/.installed ## the .venv (uv sync --locked: every dependency group)

# The light targets (make ui, make docs, make load) install only their dependency group, in a
# venv of their own (.venv-<group>): no torch, no llama.cpp compile, no test tooling.
light = .venv-$(1)/.installed
.venv-%/.installed: pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
		|| { echo "Python 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/pip install --quiet uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=.venv-$* UV_PYTHON=.venv-$*/bin/python UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=true \
		.venv-$*/bin/uv sync --locked --only-group $* --no-install-project
	touch $@

model: setup ## the embedded default model into the project's store (.bentoml)
	$(BIN)/python models/import_default_model.py

# make import-model BUCKET=my-models PREFIX=food-101-93m [TAG=food101-siglip]: a checkpoint from
# GCS into the project's store, each object's checksum verified and logged.
import-model: setup ## a checkpoint from gs://BUCKET/PREFIX into the project's store
	$(BIN)/tikka import-model --bucket "$(BUCKET)" --prefix "$(PREFIX)" $(if $(TAG),--tag $(TAG))

serve: model ## the LLM sidecar :11434, the Bento :3000 and the Streamlit app :8501 (Ctrl-C stops all)
	$(BIN)/tikka serve --port $(PORT) --sidecar-port $(SIDECAR_PORT) --sidecar-threads $(SIDECAR_THREADS) \
		--ui-port $(FRONTEND_PORT)

stack: serve ## the same as make serve (its earlier name)

# make ui URL=https://api.example.com: the Streamlit app alone, against any Bento.
URL ?= http://127.0.0.1:$(PORT)
ui frontend: $(call light,frontend) ## the Streamlit app alone on :8501 against URL (default the local Bento)
	cd frontend && TIKKA_API_URL=$(URL) ../.venv-frontend/bin/streamlit run app.py --server.port $(FRONTEND_PORT)

sidecar: setup ## the embedded LLM sidecar alone on :11434
	$(BIN)/python -m sidecar --port $(SIDECAR_PORT) --threads $(SIDECAR_THREADS)

# Debian's Chromium for the browser tests (a test tool's own browser download cannot work offline).
browser: ## Debian's chromium and chromium-driver, where missing (root)
	$(if $(shell command -v chromium && command -v chromedriver),,$(call apt_install,chromium chromium-driver))

# Retake docs/screenshots/*.png with the browser tests.
screenshots: model browser ## retake docs/screenshots/*.png
	TIKKA_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser/test_browser.py $(PYTEST_ARGS)

# Debian's kubectl renders docker/k8s (kustomize) for the manifest tests; no cluster needed.
kubectl: ## Debian's kubectl, where missing (root)
	$(if $(shell command -v kubectl),,$(call apt_install,kubectl))

# Debian's haproxy stands in for kube-proxy in tests/served/test_scale_out.py.
haproxy: ## Debian's haproxy, where missing (root)
	$(if $(shell command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null),,$(call apt_install,haproxy))

# The whole suite: no podman, no root beyond installing Chromium, kubectl and haproxy when missing.
# The container proofs are make test-images and make test-delivery (.ci/run runs all three).
test: lint model browser kubectl haproxy bruno ## lint and every test, slow ones too (no containers)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m tests.records build/reliability/RELIABILITY.md

lint: setup ## ruff (checks and format) and import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup ## ruff format and ruff's import order, in place
	$(BIN)/ruff check --select I --fix .
	$(BIN)/ruff format .

test-fast: model ## every lane's tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The fast lane (under a minute once set up). The others: python -m pytest tests/<lane>, for
# inprocess, served, reliability, deploy and browser.
test-unit: model ## the unit lane, tests/unit
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# docs/RELIABILITY.md from the reliability tests' own records (hostile inputs, fuzzing,
# overload, sidecar faults, access control, privacy, soak; ~8 min).
RELIABILITY_TESTS := tests/reliability/test_hostile.py tests/reliability/test_fuzz.py tests/reliability/test_overload.py tests/served/test_llm.py \
	tests/reliability/test_auth.py tests/reliability/test_ratelimit.py tests/reliability/test_privacy.py tests/reliability/test_soak.py
reliability: model ## docs/RELIABILITY.md from the reliability tests (~8 min)
	rm -rf build/reliability
	$(BIN)/python -m pytest $(RELIABILITY_TESTS) $(PYTEST_ARGS)
	$(BIN)/python -m tests.records

# The soak test alone, for TIKKA_SOAK_S (5 min by default here; 60 s in make test).
TIKKA_SOAK_S ?= 300
soak: model ## the soak test alone, TIKKA_SOAK_S long
	TIKKA_SOAK_S=$(TIKKA_SOAK_S) $(BIN)/python -m pytest -m soak -s $(PYTEST_ARGS)

# TIKKA_MODEL_TAG=food101-siglip:latest make build packages (and serves) that model instead.
build: model ## the Bento (bentoml build)
	$(BIN)/bentoml build --arg git_sha=$(GIT_COMMIT) $(if $(TIKKA_MODEL_TAG),--arg model_tag=$(TIKKA_MODEL_TAG))

# docs/openapi.json (a test keeps it current) and the rendered reference in docs/api/.
REDOCLY := @redocly/cli@2.77.0
api-docs: model ## docs/openapi.json and the Redoc page in docs/api/
	$(BIN)/python -m tikka.tools.openapi_document > docs/openapi.json
	@if command -v npx >/dev/null; then \
		npx --yes $(REDOCLY) build-docs docs/openapi.json --output docs/api/index.html; \
	else \
		echo "docs/openapi.json is written. Rendering docs/api/index.html needs Node.js 20+ (npx):"; \
		echo "  apt-get install nodejs npm   (or https://nodejs.org), then make api-docs again"; \
	fi

# The docs site into site/ (MkDocs Material, strict: a broken link between pages fails), with
# the Redoc reference under /api/ where Node.js (npx) is there to render it.
docs: $(call light,docs) ## the docs site into site/ (MkDocs, --strict)
	@if command -v npx >/dev/null; then \
		npx --yes $(REDOCLY) build-docs docs/openapi.json --output docs/api/index.html; \
	else \
		echo "no npx: the site is built without the Redoc reference under /api/ (apt-get install nodejs npm)"; \
	fi
	NO_MKDOCS_2_WARNING=1 .venv-docs/bin/mkdocs build --strict
# docs/reference/errors.md and configuration.md, from the error classes and Settings (a test keeps them current).
docs-reference: setup ## docs/reference/*.md from the code
	$(BIN)/python -m tikka.tools.reference

# The end-to-end API suite (read-only) against any deployment:
#   make test-api BASE_URL=https://api.example.com   (TIKKA_API_KEY if the API wants one)
BASE_URL ?= http://127.0.0.1:$(PORT)
test-api: setup ## the read-only API suite against BASE_URL
	TIKKA_BASE_URL=$(BASE_URL) $(BIN)/python -m pytest -m api tests/served/test_api_suite.py -p no:cacheprovider $(PYTEST_ARGS)

# The Bruno collection (tests/api/bruno/: open it in Bruno's app to try the API by hand), run
# with the pinned Bruno CLI from npm (tests/api/package.json and its lock).
BRU := tests/api/node_modules/.bin/bru
BRU_RUN = cd tests/api/bruno && ../node_modules/.bin/bru run -r --env $(1) --env-var baseUrl=$(2) \
	$(if $(TIKKA_API_KEY),--env-var apiKey=$(TIKKA_API_KEY))
$(BRU): tests/api/package.json tests/api/package-lock.json
	@command -v npm >/dev/null || { echo "the Bruno CLI needs Node.js 20+ and npm (apt-get install nodejs npm)"; exit 1; }
	cd tests/api && npm ci --no-audit --no-fund --silent
	touch $@
bruno: $(BRU) ## the pinned Bruno CLI, for the API collection (npm)

test-local-api: $(BRU) ## the Bruno collection against the local Bento (make serve; PORT)
	$(call BRU_RUN,local,http://127.0.0.1:$(PORT))

test-deployed-api: $(BRU) ## the Bruno collection against URL (TIKKA_API_KEY if the API wants one)
	@test -n "$(filter-out http://127.0.0.1:$(PORT),$(URL))" || { echo "give the deployment: make test-deployed-api URL=https://api.example.com"; exit 1; }
	$(call BRU_RUN,deployed,$(URL))

# After changing a pin in pyproject.toml: re-lock, then export what the Bento and the
# images install (tests/unit/test_lock.py holds the exports equal to the lock).
EXPORT := $(UV) export --frozen --no-hashes --no-emit-project --quiet
lock: setup ## re-lock after changing a pin, and export requirements/
	$(UV) lock
	$(EXPORT) --no-default-groups -o requirements/bento.txt
	for group in models sidecar frontend; do $(EXPORT) --only-group $$group -o requirements/$$group.txt; done

clean: ## remove .venv, the model store and caches
	rm -rf $(VENV) .venv-* .bentoml .pytest_cache tests/api/node_modules

include docker/docker.mk benchmarks/benchmarks.mk
