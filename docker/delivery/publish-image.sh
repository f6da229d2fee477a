#!/usr/bin/env bash
# images.yml's build-and-push step (`make publish-image IMAGE=...`): one image for each
# platform, pushed as one multi-arch tag per tag, labelled with what it carries.
#   IMAGE (argument)  backend | frontend | llm-sidecar
#   REGISTRY, TAGS    from docker/delivery/image-tags.sh: <host>/<owner> and "<sha12> [<version>]"
#   PLATFORMS         "linux/amd64 linux/arm64" (the default)
#   CONTAINER         docker: one buildx build for all platforms with a registry build cache
#                     (GitHub's runners); podman: the per-arch builds of `make image-*`,
#                     joined by docker/push-images.sh (this project's machines, no Docker)
# Labels: org.opencontainers.image.revision (the full commit), .version and .source, and
# ai.tikkamasalai.model (the model tag) on the backend, whose Bento build-bento.sh made.
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${1:?usage: publish-image.sh backend|frontend|llm-sidecar}
name=tikka-$image
: "${REGISTRY:?set REGISTRY (image-tags.sh prints it)}" "${TAGS:?set TAGS (image-tags.sh prints them)}"
: "${BENTOML_HOME:?run it through make (make publish-image), which sets BENTOML_HOME}"
platforms=${PLATFORMS:-linux/amd64 linux/arm64}
engine=${CONTAINER:-docker}
BIN=${BIN:-.venv/bin}
sha=${GITHUB_SHA:-$(git rev-parse HEAD)}
read -ra tags <<< "$TAGS"
labels=("org.opencontainers.image.revision=$sha"
        "org.opencontainers.image.version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)")
if [ -n "${GITHUB_REPOSITORY:-}" ]; then
  labels+=("org.opencontainers.image.source=${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY")
fi
BENTO=
if [ "$image" = backend ]; then
  # shellcheck source=/dev/null
  . build/delivery/bento.env || { echo "no build/delivery/bento.env: run make bento-release first" >&2; exit 1; }
  labels+=("ai.tikkamasalai.model=$MODEL_TAG")
fi

if [ "$engine" = docker ]; then
  # One multi-platform buildx build, pushed as it is built. The layer cache lives in the
  # registry beside the image: the GitHub Actions cache backend needs the runtime token
  # that only actions get, not run: steps.
  cache=$REGISTRY/$name:buildcache
  targets=(); for tag in "${tags[@]}"; do targets+=(-t "$REGISTRY/$name:$tag"); done
  if [ "$image" = backend ]; then
    opts=(--opt "platform=${platforms// /,}" --opt push
          --opt "cache-from=type=registry,ref=$cache" --opt "cache-to=type=registry,ref=$cache,mode=max")
    for label in "${labels[@]}"; do opts+=(--opt "label=$label"); done
    exec "$BIN/bentoml" containerize "$BENTO" --backend buildx "${targets[@]}" "${opts[@]}"
  fi
  opts=(--platform "${platforms// /,}" --push
        --cache-from "type=registry,ref=$cache" --cache-to "type=registry,ref=$cache,mode=max")
  for label in "${labels[@]}"; do opts+=(--label "$label"); done
  exec docker buildx build "${targets[@]}" "${opts[@]}" -f "docker/$image.Dockerfile" .
fi

# podman: build each arch unless a local image of this commit (and, for the backend, of
# this model) is already there, e.g. from make test-images; then join and push.
label_of() { podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true; }
for platform in $platforms; do
  arch=${platform##*/}
  local_ref=localhost/$name:${tags[0]}-$arch
  if [ "$(label_of "$local_ref" org.opencontainers.image.revision)" = "$sha" ] &&
     { [ "$image" != backend ] || [ "$(label_of "$local_ref" ai.tikkamasalai.model)" = "$MODEL_TAG" ]; } &&
     [ "$(podman image inspect --format "{{.Architecture}}" "$local_ref" 2>/dev/null)" = "$arch" ]; then
    echo "reusing $local_ref (built from $sha${BENTO:+ with $MODEL_TAG})"
  else
    make --no-print-directory "image-$image" PLATFORMS="$platform" IMAGE_TAG="${tags[0]}" \
      IMAGE_LABELS="${labels[*]}" ${BENTO:+BENTO=$BENTO}
  fi
done
PUSH=1 docker/push-images.sh podman "$REGISTRY" "${tags[0]}" "${tags[*]}" "$platforms" "$name"
