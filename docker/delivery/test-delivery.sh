#!/usr/bin/env bash
# make test-delivery: every step from a push to production, executed on this machine.
#  1. images.yml's steps, each the script or make target the workflow runs, in a clean
#     shell with GitHub's variables (an owner name with capitals), pushing to a local OCI
#     registry (Debian's docker-registry) for GHCR; the model imported from the GCS emulator.
#  2. What deploy.yml will pull: every tag there, the backend amd64 + arm64, the labels;
#     the backend image run from the registry serves the emulator's model.
#  3. deploy.yml's deploy against a stand-in VM (a directory, podman-compose): v1; v2 under
#     a Locust load; a broken v3 under load, rolled back; a deploy that fails before any
#     change; and --rollback under load. Each failed request is counted per phase.
#  4. DELIVERY_REPORT (docs/DELIVERY.md with make delivery-report) from the records.
# Reuses the images of make test-images (same commit) and builds only what differs.
set -euo pipefail
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"   # rootful podman, as make test-images
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
RUN=$ROOT/build/delivery/run
REPORT=${DELIVERY_REPORT:-build/delivery/DELIVERY.md}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/sandbox/containers.conf}
CA=/etc/ssl/certs/ca-certificates.crt
BUILD_VOLUME=${BUILD_VOLUME-$CA:$CA:ro}
OWNER=TikkaMasalAI   # capitals, as GitHub owners may have: image names must be lower case
COMMIT=$(git rev-parse HEAD)
SHA12=${COMMIT:0:12}
t_start=$(date +%s)
rm -rf "$RUN" build/delivery/vm; mkdir -p "$RUN"
report() { "$BIN/python" docker/delivery/report.py "$@"; }
check() {  # check NAME COMMAND...: record and stop at the first failure
  local name=$1; shift
  if "$@"; then report record check name="$name" ok=true; echo "ok: $name"
  else report record check name="$name" ok=; echo "FAILED: $name"; exit 1; fi
}
in_registry() { skopeo inspect --tls-verify=false --raw "docker://$1" >/dev/null; }
free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
report record meta commit="$COMMIT" owner="$OWNER"

echo "==== packages"
need=()
for cmd in podman:podman runc:runc docker-registry:docker-registry skopeo:skopeo rsync:rsync \
           debootstrap:debootstrap qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support; do
  command -v "${cmd%%:*}" >/dev/null || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
systemctl disable --now docker-registry >/dev/null 2>&1 || true   # the package's own service
docker/sandbox/base-images.sh amd64
docker/sandbox/base-images.sh arm64

echo "==== the local registry (GHCR's stand-in) and the GCS emulator"
REG_PORT=$(free_port)
REGISTRY_HOST=127.0.0.1:$REG_PORT
mkdir -p "$RUN/registry"
cat > "$RUN/registry/config.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $RUN/registry/data}, delete: {enabled: true}}
http: {addr: $REGISTRY_HOST}
YAML
# podman and podman-compose reach it over plain HTTP through a registries.conf for this
# run; skopeo (1.9) still tried HTTPS with that file, so it is given --tls-verify=false.
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$REGISTRY_HOST" > "$RUN/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$RUN/registries.conf
docker-registry serve "$RUN/registry/config.yml" > "$RUN/registry.log" 2>&1 &
pids=($!)
GCS_PORT=$(free_port)
"$BIN/gcp-storage-emulator" start --host=127.0.0.1 --port="$GCS_PORT" --in-memory > "$RUN/gcs.log" 2>&1 &
pids+=($!)
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  podman rm -f tikka-delivery-backend >/dev/null 2>&1 || true
  if [ -d build/delivery/vm/live ]; then
    (cd build/delivery/vm/live && "$BIN/podman-compose" -f docker-compose.yml -f docker-compose.offline.yml \
      --profile blue --profile green down -v >/dev/null 2>&1) || true
  fi
}
trap cleanup EXIT
for _ in $(seq 60); do curl -sf "http://$REGISTRY_HOST/v2/" >/dev/null && curl -sf "http://127.0.0.1:$GCS_PORT/" >/dev/null && break; sleep 0.5; done
export STORAGE_EMULATOR_HOST=http://127.0.0.1:$GCS_PORT
BUCKET=tikka-delivery PREFIX=food-101-tiny
"$BIN/python" - "$BUCKET" "$PREFIX" <<'PY'
"""A tiny ViT checkpoint with Food-101 labels in the emulator's bucket: the production model's stand-in."""
import sys, tempfile
from pathlib import Path
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
sys.path.insert(0, ".")
from tests.tiny_models import save_tiny_vit
bucket_name, prefix = sys.argv[1:]
client = storage.Client(project="delivery", credentials=AnonymousCredentials())
bucket = client.create_bucket(bucket_name)
with tempfile.TemporaryDirectory() as tmp:
    for path in save_tiny_vit(Path(tmp)).iterdir():
        bucket.blob(f"{prefix}/{path.name}").upload_from_filename(path)
print(f"gs://{bucket_name}/{prefix}: {sorted(b.name for b in client.list_blobs(bucket_name))}")
PY

# v1, the release before this one: the image make test-images built (the embedded
# default model), saved under its own name before this commit's backend replaces it.
for image in backend frontend llm-sidecar; do
  podman image exists "localhost/tikka-$image:$SHA12-amd64" \
    || make --no-print-directory "image-$image" PLATFORMS=linux/amd64 BUILD_VOLUME="$BUILD_VOLUME" STAND_IN_BASES=1
done
podman tag "localhost/tikka-backend:$SHA12-amd64" localhost/tikka-backend:delivery-v1

echo "==== images.yml, step by step, in a clean shell with GitHub's variables"
GH_HOME=$RUN/runner-home; mkdir -p "$GH_HOME"
: > "$RUN/github_output"; : > "$RUN/step_summary"
gh() {  # a step as a runner runs it: GitHub's variables, nothing of this shell's
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$GH_HOME" LANG=C.UTF-8 \
    CI=true GITHUB_ACTIONS=true GITHUB_SHA="$COMMIT" GITHUB_REF=refs/heads/main GITHUB_REF_NAME=main \
    GITHUB_REPOSITORY_OWNER="$OWNER" GITHUB_REPOSITORY="$OWNER/TikkaMasalAI" GITHUB_SERVER_URL=https://github.com \
    GITHUB_OUTPUT="$RUN/github_output" GITHUB_STEP_SUMMARY="$RUN/step_summary" RUNNER_TEMP="$RUN" \
    CONTAINERS_CONF="$CONTAINERS_CONF" CONTAINERS_REGISTRIES_CONF="$CONTAINERS_REGISTRIES_CONF" "$@"
}
step() {  # step WORKFLOW NAME HOW COMMAND...: run as GitHub would, timed and recorded
  local workflow=$1 name=$2 how=$3 t0; shift 3; t0=$(date +%s)
  echo "-- $workflow: $name"
  gh "$@"
  report record step workflow="$workflow" step="$name" where="executed here" how="$how" result="ok in $(( $(date +%s) - t0 )) s"
}
github_only() { report record step workflow="$1" step="$2" where="runs only on GitHub" how="$3" result="-"; }

github_only images.yml "actions/checkout, setup-python, setup-qemu, setup-buildx" "GitHub's own actions; here: this checkout, make setup, qemu-user-static"
github_only images.yml "docker/login-action to GHCR" "GITHUB_TOKEN; here the local registry takes pushes without a login"
github_only images.yml "google-github-actions/auth (workload identity federation)" "GitHub's OIDC token; here the emulator needs no credentials"
step images.yml "Tags" "docker/delivery/image-tags.sh" env REGISTRY_HOST="$REGISTRY_HOST" docker/delivery/image-tags.sh
REGISTRY=$(sed -n 's/^registry=//p' "$RUN/github_output" | tail -1)
TAGS=$(sed -n 's/^tags=//p' "$RUN/github_output" | tail -1)
step images.yml "The Bento, with the model the variables name" "make bento-release (TIKKA_GCS_BUCKET/PREFIX, STORAGE_EMULATOR_HOST)" \
  env TIKKA_GCS_BUCKET="$BUCKET" TIKKA_GCS_PREFIX="$PREFIX" STORAGE_EMULATOR_HOST="$STORAGE_EMULATOR_HOST" make --no-print-directory bento-release
# shellcheck source=/dev/null
. build/delivery/bento.env
step images.yml "Build and push tikka-backend" "make publish-image IMAGE=backend (podman here, buildx on GitHub)" \
  make --no-print-directory publish-image IMAGE=backend CONTAINER=podman PLATFORMS="linux/amd64 linux/arm64" \
  REGISTRY="$REGISTRY" TAGS="$TAGS" BUILD_VOLUME="$BUILD_VOLUME" STAND_IN_BASES=1
# The front end and the sidecar for amd64 only here: their arm64 builds (llama.cpp compiled
# under QEMU) take far longer than this run may; GitHub builds both platforms.
for image in frontend llm-sidecar; do
  step images.yml "Build and push tikka-$image" "make publish-image IMAGE=$image (amd64 only here)" \
    make --no-print-directory publish-image IMAGE="$image" CONTAINER=podman PLATFORMS=linux/amd64 \
    REGISTRY="$REGISTRY" TAGS="$TAGS" BUILD_VOLUME="$BUILD_VOLUME" STAND_IN_BASES=1
done
t_images=$(date +%s)

echo "==== what deploy.yml will pull"
: > "$RUN/github_output"
# deploy.yml computes its tag with the same script, from workflow_run.head_sha.
step deploy.yml "The tag to deploy" "docker/delivery/image-tags.sh with GITHUB_SHA=workflow_run.head_sha" \
  env REGISTRY_HOST="$REGISTRY_HOST" GITHUB_SHA="$COMMIT" docker/delivery/image-tags.sh
DEPLOY_TAG=$(sed -n 's/^sha_tag=//p' "$RUN/github_output" | tail -1)
check "the registry path is lower case" [ "$REGISTRY" = "$REGISTRY_HOST/${OWNER,,}" ]
check "the deploy's tag is the 12-character SHA the images were pushed with" [ "$DEPLOY_TAG" = "$SHA12" ]
for image in backend frontend llm-sidecar; do
  check "$REGISTRY/tikka-$image:$DEPLOY_TAG exists" in_registry "$REGISTRY/tikka-$image:$DEPLOY_TAG"
  raw=$(skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/tikka-$image:$DEPLOY_TAG")
  arches=$(jq -r '[.manifests[].platform.architecture] | sort | join(" ")' <<< "$raw")
  sizes="{"
  for arch in $arches; do
    info=$(skopeo inspect --tls-verify=false --override-arch "$arch" --override-os linux "docker://$REGISTRY/tikka-$image:$DEPLOY_TAG")
    check "tikka-$image ($arch): revision label is $COMMIT" \
      [ "$(jq -r '.Labels["org.opencontainers.image.revision"]' <<< "$info")" = "$COMMIT" ]
    if [ "$image" = backend ]; then
      check "tikka-backend ($arch): model label is $MODEL_TAG" [ "$(jq -r '.Labels["ai.tikkamasalai.model"]' <<< "$info")" = "$MODEL_TAG" ]
    fi
    digest=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' <<< "$raw")
    layers=$(skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/tikka-$image@$digest")
    sizes+="\"$arch\": $(jq '[.layers[].size] | add / 1e6 | floor' <<< "$layers"),"
  done
  sizes="${sizes%,}}"
  [ "$image" = backend ] && check "tikka-backend's manifest list holds amd64 and arm64" [ "$arches" = "amd64 arm64" ]
  report record image name="tikka-$image" tags="$(jq -nc --arg t "$TAGS" '$t | split(" ")')" sizes_mb="$sizes" \
    revision="$COMMIT" model="$([ "$image" = backend ] && echo "$MODEL_TAG")"
done

echo "==== the backend image, pulled and run, serves the emulator's model"
PORT=$(free_port)
podman run -d --init --name tikka-delivery-backend -e BENTOML_PORT=8000 -p "127.0.0.1:$PORT:8000" \
  "$REGISTRY/tikka-backend:$DEPLOY_TAG" >/dev/null
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 1; done
banner=$(curl -sf "http://127.0.0.1:$PORT/")
build_info=$(curl -sf "http://127.0.0.1:$PORT/metrics" | grep '^tikka_build_info{' || true)
prediction=$(curl -sf -F image=@tests/data/pizza.jpg "http://127.0.0.1:$PORT/predict")
check "the image serves $MODEL_TAG (GET /)" [ "$(jq -r .model <<< "$banner")" = "$MODEL_TAG" ]
check "the image states its commit (GET /)" [ "$(jq -r .git_sha <<< "$banner")" = "$COMMIT" ]
check "tikka_build_info carries the commit and the model" grep -q "git_sha=\"$COMMIT\".*model_tag=\"$MODEL_TAG\"\|model_tag=\"$MODEL_TAG\".*git_sha=\"$COMMIT\"" <<< "$build_info"
top=$(jq -r '.predictions | to_entries | max_by(.value) | .key' <<< "$prediction")
check "its predictions are the emulator checkpoint's labels" grep -qx "$top" <("$BIN/python" -c 'from tests.tiny_models import LABELS; print("\n".join(LABELS))')
report record served image="$REGISTRY/tikka-backend:$DEPLOY_TAG" model="$MODEL_TAG" git_sha="$COMMIT" build_info="$build_info" top="$top"
podman rm -f tikka-delivery-backend >/dev/null
t_checks=$(date +%s)

echo "==== deploy.yml's deploy, on a stand-in VM"
VM=$ROOT/build/delivery/vm
mkdir -p "$VM/live"
cp -a docker/certs "$VM/live/certs"
cat > "$VM/live/.env" <<ENV
# The operator's settings on the VM (deploy.sh owns TIKKA_IMAGE_TAG and COMPOSE_PROFILES).
TIKKA_REGISTRY=$REGISTRY
COMPOSE_FILE=docker-compose.yml:docker-compose.offline.yml
# Grafana, certbot and Prometheus have no image on this machine (docker/sandbox).
TIKKA_SERVICES=ollama frontend nginx
TIKKA_BACKEND_BIND=127.0.0.1
ENV
# v1 (embedded default), v2 (this commit, as CI pushed it), v3 (broken: never ready).
podman push -q "localhost/tikka-backend:delivery-v1" "docker://$REGISTRY/tikka-backend:v1-previous"
printf 'FROM %s\n# A release whose readiness never passes: the model it names is not in the image.\nENV TIKKA_MODEL_TAG=no-such-model:latest\n' \
  "$REGISTRY/tikka-backend:$DEPLOY_TAG" > "$RUN/broken.Containerfile"
podman build -q --platform linux/amd64 -f "$RUN/broken.Containerfile" -t localhost/tikka-backend:delivery-v3 "$RUN" >/dev/null
podman push -q localhost/tikka-backend:delivery-v3 "docker://$REGISTRY/tikka-backend:v3-broken"
for image in frontend llm-sidecar; do
  for tag in v1-previous v3-broken; do
    skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$REGISTRY/tikka-$image:$DEPLOY_TAG" "docker://$REGISTRY/tikka-$image:$tag"
  done
done
ship() {  # deploy.yml's copy step, to the local directory
  gh docker/deploy/ship-release.sh "" "$VM" "$1"
}
ship v1-previous; ship "$DEPLOY_TAG"; ship v3-broken
# v3's files differ, so that the rollback can be seen restoring v2's.
echo "# release v3-broken" >> "$VM/releases/v3-broken/docker-compose.yml"
echo "# release v3-broken" >> "$VM/releases/v3-broken/nginx/tikka.conf"
report record step workflow=deploy.yml step="Copy the release's docker/ to the VM" where="executed here" \
  how="docker/deploy/ship-release.sh (rsync; to a local directory here, over SSH on GitHub)" result=ok
github_only deploy.yml "Wait for CI on the commit" "docker/delivery/wait-for-ci.sh: GitHub's API (gh); its logic is tested with a stand-in gh"
github_only deploy.yml "SSH key, and the VM's login to GHCR" "secrets and SSH; the stand-in registry takes anonymous pulls"
github_only deploy.yml "The API suite against production" "make test-api BASE_URL=...; the same suite runs against the stand-in VM below"

deploy_run() {  # deploy_run NAME EXPECTED_RC LOAD(0/1) ARGS...: deploy.sh, optionally under Locust
  local name=$1 expected=$2 load=$3 rc=0 log prefix="" locust_pid=""; shift 3
  log=$RUN/deploy-$(tr -c 'a-z0-9' - <<< "${name,,}" | cut -c1-40).log
  if [ "$load" = 1 ]; then
    prefix=${log%.log}-load
    "$BIN/locust" -f locustfile.py PredictUser --headless -u 6 -r 6 -t 600s --host http://127.0.0.1:8000 \
      --think-time 0.25 --photos samples --csv "$prefix" --csv-full-history --only-summary > "$prefix.log" 2>&1 &
    locust_pid=$!
    sleep 5   # the load runs before the deploy starts
  fi
  echo "-- deploy: $name"
  env COMPOSE="$BIN/podman-compose" ENGINE=podman TIKKA_READY_TIMEOUT_S="${READY_TIMEOUT_S:-90}" \
    "$VM/releases/${DEPLOY_RELEASE:-$1}/deploy/deploy.sh" "$VM" "$@" > "$log" 2>&1 || rc=$?
  cat "$log"
  if [ -n "$locust_pid" ]; then
    sleep 5   # and after it ends
    kill -TERM "$locust_pid"; wait "$locust_pid" || true
  fi
  report deploy "$name" "${*: -1}" "$rc" "$expected" "$log" "$prefix"
  check "$name: exit code $rc, expected $expected" [ "$rc" = "$expected" ]
  if [ -n "$prefix" ]; then
    failures=$("$BIN/python" -c 'import sys; sys.path.insert(0, "docker/delivery"); import report; print(report.load_totals(sys.argv[1])[1])' "$prefix")
    check "$name: 0 failed requests under load" [ "$failures" = 0 ]
  fi
}
served_model() { curl -sf --max-time 5 http://127.0.0.1:8000/ | jq -r .model; }
# (backend.conf names the serving slot: the deploy's own state, not the release's.)
live_matches() { diff -r -x .env -x certs -x backend.conf "$VM/releases/$1" "$VM/live" >/dev/null; }

DEPLOY_RELEASE=v1-previous deploy_run "v1, on an empty VM" 0 0 v1-previous
check "v1 serves the embedded default" [ "$(served_model)" != "$MODEL_TAG" ]
v1_model=$(served_model)
DEPLOY_RELEASE=$DEPLOY_TAG deploy_run "v2 (this commit) under load" 0 1 "$DEPLOY_TAG"
check "v2 serves the emulator's model through nginx's :8000" [ "$(served_model)" = "$MODEL_TAG" ]
check "the Streamlit front end answers through nginx" curl -skf -o /dev/null --resolve tikka.local:443:127.0.0.1 https://tikka.local/_stcore/health
DEPLOY_RELEASE=v3-broken deploy_run "v3 (never ready) under load, rolled back" 1 1 v3-broken
check "after the rollback v2 still serves" [ "$(served_model)" = "$MODEL_TAG" ]
check "the rollback restored v2's docker/ files" live_matches "$DEPLOY_TAG"
check "the state names v2 as serving" grep -qx "ACTIVE_TAG=$DEPLOY_TAG" "$VM/state.env"
before=$(podman ps --format '{{.ID}}' --filter name=backend | sort)
ship no-such-tag   # its files arrive; its images are not in the registry
DEPLOY_RELEASE=$DEPLOY_TAG deploy_run "a tag that is not in the registry: fails before any change" 2 0 no-such-tag
check "a failed pull changed nothing: the same backend container" [ "$(podman ps --format '{{.ID}}' --filter name=backend | sort)" = "$before" ]
check "a failed pull did not roll back: no rollback phase" bash -c "! grep -q 'phase rollback' '$RUN'/deploy-a-tag-that-is-not*.log"
DEPLOY_RELEASE=$DEPLOY_TAG deploy_run "--rollback under load: back to v1" 0 1 --rollback
check "--rollback restored v1's model" [ "$(served_model)" = "$v1_model" ]
check "--rollback restored v1's docker/ files" live_matches v1-previous
t_deploys=$(date +%s)
report record step workflow=deploy.yml step="Deploy (blue/green; rolls itself back)" where="executed here" \
  how="docker/deploy/deploy.sh on the stand-in VM: the five deploys below" result=ok
report record step workflow=deploy.yml step="Roll back to the previous release" where="executed here" \
  how="docker/deploy/deploy.sh --rollback, the last deploy below" result=ok
report record step workflow=ci.yml step="bash .ci/run" where="executed here" \
  how="the same command: make test, then this make test-delivery" result="-"
github_only docs.yml "Render the reference and publish it on Pages" "GitHub Pages; make api-docs renders the same page here"

report record duration part="images.yml steps (Bento, images, push)" seconds=$(( t_images - t_start ))
report record duration part="registry checks and the image run" seconds=$(( t_checks - t_images ))
report record duration part="the deploys and rollbacks" seconds=$(( t_deploys - t_checks ))
report render "$REPORT"
