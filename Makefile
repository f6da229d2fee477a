# Two commands on a fresh clone with Python 3.11 and make:
#   make serve   set up .venv, import the embedded default model, start the LLM sidecar
#                on :11434 and serve the Bento on :3000
#   make test    set up .venv, the model store and Chromium, run the whole test suite
#   make stack   the whole local stack: sidecar :11434, Bento :3000, Streamlit :8501
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
SIDECAR_PORT ?= 11434
SIDECAR_THREADS ?= 2
FRONTEND_PORT ?= 8501
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
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

.PHONY: setup model serve sidecar stack frontend browser kubectl haproxy screenshots test test-fast test-unit lint bench bench-production profile load build lock clean \
	images image-backend image-frontend image-llm-sidecar push-images compose-up compose-down compose-logs \
	local-up local-down local-logs local-certs test-images api-docs test-api reliability soak \
	bento-release publish-image test-delivery delivery-report docs docs-reference

# uv is bootstrapped into the venv with pip, then installs exactly uv.lock (every group).
$(BIN)/.installed: pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
		|| { echo "Python 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	@echo "Installing; llama-cpp-python compiles llama.cpp the first time (several minutes)."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(UV) sync --locked
	touch $@

setup: $(BIN)/.installed

model: setup
	$(BIN)/python models/import_default_model.py

# The sidecar runs beside the Bento and stops with it (Ctrl-C stops both).
serve: model
	$(BIN)/python -m sidecar --port $(SIDECAR_PORT) --threads $(SIDECAR_THREADS) & \
	sidecar=$$!; trap 'kill $$sidecar 2>/dev/null' EXIT INT TERM; \
	$(BIN)/bentoml serve service:Gateway --port $(PORT)

sidecar: setup
	$(BIN)/python -m sidecar --port $(SIDECAR_PORT) --threads $(SIDECAR_THREADS)

# Everything, locally: sidecar, Bento, and the Streamlit app on :8501 (Ctrl-C stops all).
stack: model
	$(BIN)/python -m sidecar --port $(SIDECAR_PORT) --threads $(SIDECAR_THREADS) & sidecar=$$!; \
	$(BIN)/bentoml serve service:Gateway --port $(PORT) & bento=$$!; \
	trap 'kill $$sidecar $$bento 2>/dev/null' EXIT INT TERM; \
	cd frontend && TIKKA_API_URL=http://localhost:$(PORT) ../$(BIN)/streamlit run app.py --server.port $(FRONTEND_PORT)

frontend: setup
	cd frontend && ../$(BIN)/streamlit run app.py --server.port $(FRONTEND_PORT)

# Debian's Chromium for the browser tests (a test tool's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		echo "Installing Debian's chromium and chromium-driver for the browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# Retake docs/screenshots/*.png with the browser tests.
screenshots: model browser
	TIKKA_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser/test_browser.py $(PYTEST_ARGS)

# Debian's kubectl renders docker/k8s (kustomize) for the manifest tests; no cluster needed.
kubectl:
	@command -v kubectl >/dev/null || { \
		echo "Installing Debian's kubectl for the manifest tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq kubectl; }

# Debian's haproxy stands in for kube-proxy in tests/served/test_scale_out.py.
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
		echo "Installing Debian's haproxy for the scale-out test"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq haproxy; }

# The whole suite: no podman, no root beyond installing Chromium, kubectl and haproxy when missing.
# The container proofs are make test-images and make test-delivery (.ci/run runs all three).
test: lint model browser kubectl haproxy
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m tests.records build/reliability/RELIABILITY.md

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test-fast: model
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The fast lane (under a minute once set up). The others: python -m pytest tests/<lane>, for
# inprocess, served, reliability, deploy and browser.
test-unit: model
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# docs/RELIABILITY.md from the reliability tests' own records (hostile inputs, fuzzing,
# overload, sidecar faults, access control, privacy, soak; ~8 min).
RELIABILITY_TESTS := tests/reliability/test_hostile.py tests/reliability/test_fuzz.py tests/reliability/test_overload.py tests/served/test_llm.py \
	tests/reliability/test_auth.py tests/reliability/test_ratelimit.py tests/reliability/test_privacy.py tests/reliability/test_soak.py
reliability: model
	rm -rf build/reliability
	$(BIN)/python -m pytest $(RELIABILITY_TESTS) $(PYTEST_ARGS)
	$(BIN)/python -m tests.records

# The soak test alone, for TIKKA_SOAK_S (5 min by default here; 60 s in make test).
TIKKA_SOAK_S ?= 300
soak: model
	TIKKA_SOAK_S=$(TIKKA_SOAK_S) $(BIN)/python -m pytest -m soak -s $(PYTEST_ARGS)

# benchmarks/REPORT.md and report.png: the Bento against plain FastAPI, side by side (~10 min).
bench: model
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# benchmarks/REPORT-production.md: the production model's architecture (SigLIP-B/16, Food-101
# head, random weights: models/build_production_architecture.py) four ways, side by side, at the
# precision the start-up choice serves; REPORT-production-fp32.md at fp32, as the arm64 image
# serves it (~30 min). 16 closed-loop users queue for seconds on 2 cores: a 20 s batching budget
# measures throughput, where the 5 s default would measure shedding.
PRODUCTION_ARGS = --bento-env TIKKA_MAX_LATENCY_MS=20000
bench-production: model
	$(BIN)/python models/build_production_architecture.py
	$(BIN)/python benchmarks/production.py $(PRODUCTION_ARGS) $(BENCH_ARGS)
	$(BIN)/python benchmarks/production.py $(PRODUCTION_ARGS) --bento-env TIKKA_PRECISION=fp32 \
		--report benchmarks/REPORT-production-fp32.md $(BENCH_ARGS)

# benchmarks/PROFILE.md: where an idle /predict's milliseconds go, sampled with py-spy (~2 min).
profile: model
	$(BIN)/python benchmarks/profile_idle.py $(PROFILE_ARGS)

# Locust against any deployment: make load HOST=https://api.example.com USERS=16 DURATION=60s
HOST ?= http://127.0.0.1:$(PORT)
USERS ?= 16
DURATION ?= 60s
load: setup
	$(BIN)/locust -f locustfile.py --headless --host $(HOST) -u $(USERS) -r $(USERS) -t $(DURATION) $(LOCUST_ARGS)

# TIKKA_MODEL_TAG=food101-siglip:latest make build packages (and serves) that model instead.
build: model
	$(BIN)/bentoml build --arg git_sha=$(GIT_COMMIT) $(if $(TIKKA_MODEL_TAG),--arg model_tag=$(TIKKA_MODEL_TAG))

# ---- Delivery: the steps of .github/workflows, as scripts (docker/delivery/; docs/delivery-pipeline.md) ----
# The release Bento: the model the variables TIKKA_GCS_BUCKET/TIKKA_GCS_PREFIX name, else the
# embedded default.
bento-release: setup
	docker/delivery/build-bento.sh
# One image for every platform, pushed to REGISTRY with TAGS (docker/delivery/image-tags.sh).
publish-image:
	docker/delivery/publish-image.sh $(IMAGE)
# Every step from a push to production, executed here: GitHub's variables in a clean shell,
# a local registry for GHCR, the GCS emulator, and a stand-in VM for the deploy and its
# rollbacks under load. Reuses make test-images' images. Writes DELIVERY_REPORT.
DELIVERY_REPORT ?= build/delivery/DELIVERY.md
test-delivery: model local-certs
	DELIVERY_REPORT=$(DELIVERY_REPORT) docker/delivery/test-delivery.sh
delivery-report:
	$(MAKE) --no-print-directory test-delivery DELIVERY_REPORT=docs/DELIVERY.md

# ---- Images and Compose (docker/; see docs/deploy.md) ----------------------------------
# CONTAINER: docker or podman. PLATFORMS: any of linux/amd64 linux/arm64 (emulated off-arch).
# Images are tagged <name>:<IMAGE_TAG>-<arch> locally; push-images joins the arches into
# one manifest per tag on GHCR: the version and the git SHA, never only latest.
CONTAINER ?= $(shell command -v docker >/dev/null && docker info >/dev/null 2>&1 && echo docker || echo podman)
PLATFORMS ?= linux/amd64 linux/arm64
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE_TAG ?= $(GIT_SHA)
REGISTRY ?= ghcr.io/$(or $(IMAGE_OWNER),tikkamasalai)
# Extra build flags, e.g. a CA bundle mounted for RUN steps behind a TLS proxy (the
# smoke test does this on its sandbox); never baked into an image.
BUILD_VOLUME ?=
BENTO ?= tikkamasalai:latest
# OCI labels on every image (docker/delivery/publish-image.sh adds the backend's model tag).
IMAGE_LABELS ?= org.opencontainers.image.revision=$(GIT_COMMIT) org.opencontainers.image.version=$(VERSION)
# Machines without a registry (this project's sandbox; make test-delivery sets it): point the
# stand-in base images (docker/sandbox/base-images.sh, a `podman tag` once cached) at each
# platform before its build, since one local name holds one architecture.
STAND_IN_BASES ?=
stand_in = $(if $(STAND_IN_BASES),docker/sandbox/base-images.sh $(call arch,$(1)) >/dev/null &&)
# podman writes OCI images by default, which drop HEALTHCHECK; Docker's format keeps it.
PODMAN_FORMAT = $(if $(filter podman,$(CONTAINER)),--format docker)
arch = $(lastword $(subst /, ,$(1)))

# A named Bento (publish-image passes the release's) is containerized as it is.
image-backend: $(if $(filter tikkamasalai:latest,$(BENTO)),build)
	$(foreach p,$(PLATFORMS),$(call stand_in,$(p)) $(BIN)/bentoml containerize $(BENTO) --backend $(CONTAINER) \
		--opt platform=$(p) $(if $(BUILD_VOLUME),--opt volume=$(BUILD_VOLUME)) \
		$(foreach l,$(IMAGE_LABELS),--opt label=$(l)) -t tikka-backend:$(IMAGE_TAG)-$(call arch,$(p)) &&) true

image-frontend image-llm-sidecar: image-%:
	$(foreach p,$(PLATFORMS),$(call stand_in,$(p)) $(CONTAINER) build --platform $(p) $(PODMAN_FORMAT) $(if $(BUILD_VOLUME),-v $(BUILD_VOLUME)) \
		$(foreach l,$(IMAGE_LABELS),--label $(l)) -f docker/$*.Dockerfile -t tikka-$*:$(IMAGE_TAG)-$(call arch,$(p)) . &&) true

images: image-backend image-frontend image-llm-sidecar

# Build the multi-arch manifests; PUSH=1 also pushes them (needs `podman login ghcr.io`).
IMAGES ?= tikka-backend tikka-frontend tikka-llm-sidecar
push-images:
	PUSH=$(PUSH) docker/push-images.sh $(CONTAINER) $(REGISTRY) $(IMAGE_TAG) "$(VERSION) $(IMAGE_TAG)" "$(PLATFORMS)" "$(IMAGES)"

COMPOSE ?= $(if $(filter podman,$(CONTAINER)),$(BIN)/podman-compose,docker compose)
# OFFLINE=1: the embedded sidecar in place of Ollama (no registry needed).
COMPOSE_OFFLINE = $(if $(filter 1,$(OFFLINE)),-f $(CURDIR)/docker/docker-compose.offline.yml)
compose-up compose-down compose-logs: export TIKKA_IMAGE_TAG ?= $(VERSION)
compose-up:
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose.yml $(COMPOSE_OFFLINE) up -d
compose-down:
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose.yml $(COMPOSE_OFFLINE) down
compose-logs:
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose.yml $(COMPOSE_OFFLINE) logs --tail=200
NATIVE_PLATFORM := linux/$(shell uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')
local-up local-down local-logs: export TIKKA_IMAGE_TAG = $(IMAGE_TAG)-$(call arch,$(NATIVE_PLATFORM))
local-up local-down local-logs: export TIKKA_REGISTRY = localhost
# The backend's blue slot (docker/nginx/backend.conf names it; deploy.sh switches slots on a VM).
local-up local-down local-logs: export COMPOSE_PROFILES = blue
local-up: local-certs
	$(MAKE) images PLATFORMS=$(NATIVE_PLATFORM)
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose-local.yml $(COMPOSE_OFFLINE) up -d
local-down:
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose-local.yml $(COMPOSE_OFFLINE) down
local-logs:
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose-local.yml $(COMPOSE_OFFLINE) logs --tail=200

# A self-signed certificate in certbot's layout, so the local nginx has one to serve.
LOCAL_DOMAIN ?= tikka.local
local-certs: docker/certs/live/tikka/fullchain.pem
docker/certs/live/tikka/fullchain.pem:
	mkdir -p $(@D)
	openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=$(LOCAL_DOMAIN)" \
		-addext "subjectAltName=DNS:$(LOCAL_DOMAIN),DNS:api.$(LOCAL_DOMAIN)" \
		-keyout $(@D)/privkey.pem -out $@ 2>/dev/null
	chmod 644 $(@D)/privkey.pem

# Build the amd64 images, run the local stack (offline) under podman and check it through
# nginx, then the arm64 Bento image under emulation (SMOKE_ARM64=0 skips it). ~14 min cold.
test-images: model local-certs kubectl
	docker/smoke/smoke.sh

# docs/openapi.json (a test keeps it current) and the rendered reference in docs/api/.
REDOCLY := @redocly/cli@2.77.0
api-docs: model
	$(BIN)/python -m tikka.tools.openapi_document > docs/openapi.json
	@if command -v npx >/dev/null; then \
		npx --yes $(REDOCLY) build-docs docs/openapi.json --output docs/api/index.html; \
	else \
		echo "docs/openapi.json is written. Rendering docs/api/index.html needs Node.js 20+ (npx):"; \
		echo "  apt-get install nodejs npm   (or https://nodejs.org), then make api-docs again"; \
	fi

# The docs site into site/ (MkDocs Material, strict: a broken link between pages fails), with
# the Redoc reference under /api/ where Node.js (npx) is there to render it.
docs: setup
	@if command -v npx >/dev/null; then \
		npx --yes $(REDOCLY) build-docs docs/openapi.json --output docs/api/index.html; \
	else \
		echo "no npx: the site is built without the Redoc reference under /api/ (apt-get install nodejs npm)"; \
	fi
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
# docs/reference/errors.md and configuration.md, from the error classes and Settings (a test keeps them current).
docs-reference: setup
	$(BIN)/python -m tikka.tools.reference

# The end-to-end API suite (read-only) against any deployment:
#   make test-api BASE_URL=https://api.example.com   (TIKKA_API_KEY if the API wants one)
BASE_URL ?= http://127.0.0.1:$(PORT)
test-api: setup
	TIKKA_BASE_URL=$(BASE_URL) $(BIN)/python -m pytest -m api tests/served/test_api_suite.py -p no:cacheprovider $(PYTEST_ARGS)

# After changing a pin in pyproject.toml: re-lock, then export what the Bento and the
# images install (tests/unit/test_lock.py holds the exports equal to the lock).
EXPORT := $(UV) export --frozen --no-hashes --no-emit-project --quiet
lock: setup
	$(UV) lock
	$(EXPORT) --no-default-groups -o requirements/bento.txt
	for group in models sidecar frontend; do $(EXPORT) --only-group $$group -o requirements/$$group.txt; done

clean:
	rm -rf $(VENV) .bentoml .pytest_cache
