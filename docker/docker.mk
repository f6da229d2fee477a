.PHONY: bento-release publish-image test-delivery delivery-report images image-backend image-frontend image-llm-sidecar \
	push-images compose-up compose-down compose-logs local-up local-down local-logs local-certs test-images

# Included by the Makefile: the delivery path, the images and the Compose stacks (docs/deploy.md).

# ---- Delivery: the steps of .github/workflows, as scripts (docker/delivery/; docs/delivery-pipeline.md) ----
# The release Bento: the model the variables TIKKA_GCS_BUCKET/TIKKA_GCS_PREFIX name, else the
# embedded default.
bento-release: setup ## the release Bento (the GCS model, else the default)
	docker/delivery/build-bento.sh
# One image for every platform, pushed to REGISTRY with TAGS (docker/delivery/image-tags.sh).
publish-image: ## one image for every platform, pushed to REGISTRY with TAGS
	docker/delivery/publish-image.sh $(IMAGE)
# Every step from a push to production, executed here: GitHub's variables in a clean shell,
# a local registry for GHCR, the GCS emulator, and a stand-in VM for the deploy and its
# rollbacks under load. Reuses make test-images' images. Writes DELIVERY_REPORT.
DELIVERY_REPORT ?= build/delivery/DELIVERY.md
test-delivery: model local-certs ## every step from a push to production, here (DELIVERY_REPORT)
	DELIVERY_REPORT=$(DELIVERY_REPORT) docker/delivery/test-delivery.sh
delivery-report: ## make test-delivery, writing docs/DELIVERY.md
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
image-backend: $(if $(filter tikkamasalai:latest,$(BENTO)),build) ## the Bento's image (bentoml containerize)
	$(foreach p,$(PLATFORMS),$(call stand_in,$(p)) $(BIN)/bentoml containerize $(BENTO) --backend $(CONTAINER) \
		--opt platform=$(p) $(if $(BUILD_VOLUME),--opt volume=$(BUILD_VOLUME)) \
		$(foreach l,$(IMAGE_LABELS),--opt label=$(l)) -t tikka-backend:$(IMAGE_TAG)-$(call arch,$(p)) &&) true

image-frontend image-llm-sidecar: image-%: ## the front end's or the sidecar's image
	$(foreach p,$(PLATFORMS),$(call stand_in,$(p)) $(CONTAINER) build --platform $(p) $(PODMAN_FORMAT) $(if $(BUILD_VOLUME),-v $(BUILD_VOLUME)) \
		$(foreach l,$(IMAGE_LABELS),--label $(l)) -f docker/$*.Dockerfile -t tikka-$*:$(IMAGE_TAG)-$(call arch,$(p)) . &&) true

images: image-backend image-frontend image-llm-sidecar ## the three images for PLATFORMS

# Build the multi-arch manifests; PUSH=1 also pushes them (needs `podman login ghcr.io`).
IMAGES ?= tikka-backend tikka-frontend tikka-llm-sidecar
push-images: ## the multi-arch manifests (PUSH=1 pushes them to GHCR)
	PUSH=$(PUSH) docker/push-images.sh $(CONTAINER) $(REGISTRY) $(IMAGE_TAG) "$(VERSION) $(IMAGE_TAG)" "$(PLATFORMS)" "$(IMAGES)"

COMPOSE ?= $(if $(filter podman,$(CONTAINER)),$(BIN)/podman-compose,docker compose)
# OFFLINE=1: the embedded sidecar in place of Ollama (no registry needed).
COMPOSE_OFFLINE = $(if $(filter 1,$(OFFLINE)),-f $(CURDIR)/docker/docker-compose.offline.yml)
compose-up compose-down compose-logs: export TIKKA_IMAGE_TAG ?= $(VERSION)
compose-up: ## the Compose stack (OFFLINE=1: the embedded sidecar for Ollama)
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose.yml $(COMPOSE_OFFLINE) up -d
compose-down: ## stop the Compose stack
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose.yml $(COMPOSE_OFFLINE) down
compose-logs: ## the Compose stack's logs
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose.yml $(COMPOSE_OFFLINE) logs --tail=200
NATIVE_PLATFORM := linux/$(shell uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')
local-up local-down local-logs: export TIKKA_IMAGE_TAG = $(IMAGE_TAG)-$(call arch,$(NATIVE_PLATFORM))
local-up local-down local-logs: export TIKKA_REGISTRY = localhost
# The backend's blue slot (docker/nginx/backend.conf names it; deploy.sh switches slots on a VM).
local-up local-down local-logs: export COMPOSE_PROFILES = blue
local-up: local-certs ## the local stack behind nginx, from images built here
	$(MAKE) images PLATFORMS=$(NATIVE_PLATFORM)
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose-local.yml $(COMPOSE_OFFLINE) up -d
local-down: ## stop the local stack
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose-local.yml $(COMPOSE_OFFLINE) down
local-logs: ## the local stack's logs
	$(COMPOSE) -f $(CURDIR)/docker/docker-compose-local.yml $(COMPOSE_OFFLINE) logs --tail=200

# A self-signed certificate in certbot's layout, so the local nginx has one to serve.
LOCAL_DOMAIN ?= tikka.local
local-certs: docker/certs/live/tikka/fullchain.pem ## a self-signed certificate for the local nginx
docker/certs/live/tikka/fullchain.pem:
	mkdir -p $(@D)
	openssl req -x509 -newkey rsa:2048 -nodes -days 90 -subj "/CN=$(LOCAL_DOMAIN)" \
		-addext "subjectAltName=DNS:$(LOCAL_DOMAIN),DNS:api.$(LOCAL_DOMAIN)" \
		-keyout $(@D)/privkey.pem -out $@ 2>/dev/null
	chmod 644 $(@D)/privkey.pem

# Build the amd64 images, run the local stack (offline) under podman and check it through
# nginx, then the arm64 Bento image under emulation (SMOKE_ARM64=0 skips it). ~14 min cold.
test-images: model local-certs kubectl ## (root, podman) the images, the Compose stack and the arm64 Bento checked
	docker/smoke/smoke.sh

