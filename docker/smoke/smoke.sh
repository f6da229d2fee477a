#!/usr/bin/env bash
# `make test-images`: the deployment proven on this machine with podman.
#  1. static checks: Compose files (config), nginx -t, hadolint, promtool;
#  2. the amd64 images, built as `make images` builds them;
#  3. the local stack with the offline variant, every health check waited for,
#     then docker/smoke/checks.py through nginx, the published ports and Prometheus;
#  4. the Bento image under `podman run --cpus=1`: its threads follow the quota (cpu_quota.py);
#  5. the Kubernetes gateway and classifier Deployments, rendered by kustomize, under
#     `podman kube play`: arguments, ConfigMap and Secret, security context, limits, probes (kube_play.py);
#  6. the Bento image for linux/arm64 under emulation: uname -m, /readyz, the pizza photo,
#     the runtime and precision chosen there, and the reduced precisions' agreement gate;
#  7. the multi-arch manifest of the Bento image, built locally (never pushed here).
# Durations and image sizes go to build/smoke/report.md.
# Machines without registry access (this project's sandbox) get stand-in base images
# from Debian (docker/sandbox/) and the host's CA bundle for RUN steps only.
set -euo pipefail
# Rootful podman, binfmt_misc and apt need root.
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
REPORT_DIR=$ROOT/build/smoke
mkdir -p "$REPORT_DIR"
report=$REPORT_DIR/report.md
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/sandbox/containers.conf}
export TIKKA_REGISTRY=localhost
sha=$(git rev-parse --short=12 HEAD)
export TIKKA_IMAGE_TAG=$sha-amd64
CA=/etc/ssl/certs/ca-certificates.crt
BUILD_VOLUME=${BUILD_VOLUME-$CA:$CA:ro}
DOMAIN=tikka.local
# The backend in its blue slot, as a first deploy starts it (docker/deploy/deploy.sh).
COMPOSE=("$BIN/podman-compose" -f "$ROOT/docker/docker-compose-local.yml" -f "$ROOT/docker/docker-compose.offline.yml" --profile blue)
ARM64=${SMOKE_ARM64:-1}
ARM64_GATE_IMAGES=${SMOKE_ARM64_GATE_IMAGES:-8}
t0=$(date +%s)
step_start=$t0
timings=()
step() {  # record how long the previous step took, announce the next
  local now; now=$(date +%s)
  [ -n "${step_name:-}" ] && timings+=("| $step_name | $((now - step_start)) s |")
  step_name=$1; step_start=$now
  echo; echo "==== $1"
}

step "packages (podman, qemu, nginx, prometheus)"
need=()
for cmd in podman:podman runc:runc debootstrap:debootstrap qemu-aarch64-static:qemu-user-static \
           update-binfmts:binfmt-support nginx:nginx promtool:prometheus openssl:openssl; do
  command -v "${cmd%%:*}" >/dev/null || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
# Debian's nginx and prometheus packages start services: only their binaries are wanted.
systemctl disable --now nginx prometheus >/dev/null 2>&1 || true
pkill -x nginx 2>/dev/null || true; pkill -x prometheus 2>/dev/null || true

step "base images (amd64)"
docker/sandbox/base-images.sh amd64

step "static checks"
make --no-print-directory local-certs LOCAL_DOMAIN="$DOMAIN"
for files in "docker/docker-compose.yml" "docker/docker-compose.yml docker/docker-compose.offline.yml" \
             "docker/docker-compose-local.yml" "docker/docker-compose-local.yml docker/docker-compose.offline.yml"; do
  args=(); for f in $files; do args+=(-f "$ROOT/$f"); done
  TIKKA_IMAGE_TAG=check "$BIN/podman-compose" "${args[@]}" config >/dev/null
  echo "compose config ok: $files"
done
podman run --rm --add-host backend-blue:127.0.0.1 --add-host frontend:127.0.0.1 \
  -v "$ROOT/docker/nginx:/etc/nginx/conf.d:ro" \
  -v "$ROOT/docker/certs:/etc/letsencrypt:ro" docker.io/library/nginx:1.27-bookworm nginx -t
"$BIN/hadolint" --config docker/.hadolint.yaml docker/*.Dockerfile
echo "hadolint ok"
promtool check config docker/prometheus/prometheus.yml

step "images (amd64)"
make --no-print-directory images PLATFORMS=linux/amd64 BUILD_VOLUME="$BUILD_VOLUME"

step "stack up (offline variant) and health checks"
cleanup() { "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
# Every service but grafana, whose image no registry here can give (docs/deploy.md).
"${COMPOSE[@]}" up -d ollama backend-blue frontend nginx prometheus
# podman runs health checks from systemd timers, which this machine lacks: run each
# container's own health check here until all pass.
deadline=$(( $(date +%s) + 240 ))
while :; do
  pending=()
  for c in $(podman ps --filter label=io.podman.compose.project=tikka-local --format '{{.Names}}'); do
    if podman inspect --format '{{if .Config.Healthcheck}}yes{{end}}' "$c" | grep -q yes; then
      podman healthcheck run "$c" >/dev/null 2>&1 || pending+=("$c")
    fi
  done
  # Healthy twice in a row, 3 s apart: a container that crashes and restarts can
  # pass one check in between.
  if [ ${#pending[@]} -eq 0 ]; then
    [ "${healthy_once:-}" = 1 ] && break
    healthy_once=1
  else
    healthy_once=0
  fi
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "not healthy: ${pending[*]}"; "${COMPOSE[@]}" ps; "${COMPOSE[@]}" logs --tail 50; exit 1
  fi
  sleep 3
done
"${COMPOSE[@]}" ps
podman ps --filter label=io.podman.compose.project=tikka-local --format '{{.Names}} {{.Status}}'

step "checks through nginx, the published ports and Prometheus"
token=smoke-$sha
webroot=$(podman volume inspect --format '{{.Mountpoint}}' tikka-local_certbot-webroot)
mkdir -p "$webroot/.well-known/acme-challenge" && echo "$token" > "$webroot/.well-known/acme-challenge/$token"
chmod -R a+rX "$webroot"
# Inside the network, as the old clients do: tikka-backend:8000.
frontend=$(podman ps --filter label=io.podman.compose.project=tikka-local --filter label=com.docker.compose.service=frontend --format '{{.Names}}')
podman exec "$frontend" python -c "import urllib.request as u; print('frontend -> tikka-backend:8000/health', u.urlopen('http://tikka-backend:8000/health').status)"
"$BIN/python" docker/smoke/checks.py --domain "$DOMAIN" --acme-token "$token" | tee "$REPORT_DIR/checks.txt"
# The end-to-end API suite against the stack's published backend port.
make --no-print-directory test-api BASE_URL=http://127.0.0.1:8000 PYTEST_ARGS=-q | tee "$REPORT_DIR/test-api.txt"
podman stats --no-stream --format '{{.Name}} {{.MemUsage}}' | tee "$REPORT_DIR/memory.txt"
cleanup
trap - EXIT

step "Bento image under a CPU quota (podman run --cpus=1): threads from the quota"
"$BIN/python" docker/smoke/cpu_quota.py "localhost/tikka-backend:$TIKKA_IMAGE_TAG" --cpus 1 | tee "$REPORT_DIR/cpu-quota.md"

step "Kubernetes Deployments under podman kube play: gateway and classifier apart"
"$BIN/python" docker/smoke/kube_play.py "localhost/tikka-backend:$TIKKA_IMAGE_TAG" | tee "$REPORT_DIR/kube-play.txt"

if [ "$ARM64" = 1 ]; then
  step "base images (arm64, emulated)"
  docker/sandbox/base-images.sh arm64
  step "Bento image (arm64, emulated)"
  make --no-print-directory image-backend PLATFORMS=linux/arm64 BUILD_VOLUME="$BUILD_VOLUME"
  step "arm64 Bento: uname -m, /readyz, the pizza photo"
  image=localhost/tikka-backend:$sha-arm64
  arch=$(podman run --rm --platform linux/arm64 --entrypoint uname "$image" -m)
  echo "uname -m: $arch"; [ "$arch" = aarch64 ]
  podman rm -f tikka-arm64-smoke >/dev/null 2>&1 || true
  podman run -d --init --name tikka-arm64-smoke --platform linux/arm64 -e BENTOML_PORT=8000 -p 127.0.0.1:8010:8000 "$image" >/dev/null
  trap 'podman rm -f tikka-arm64-smoke >/dev/null 2>&1 || true' EXIT
  started=$(date +%s)
  until curl -sf http://127.0.0.1:8010/readyz >/dev/null; do
    [ $(( $(date +%s) - started )) -lt 300 ] || { podman logs --tail 50 tikka-arm64-smoke; exit 1; }
    sleep 2
  done
  echo "arm64 /readyz after $(( $(date +%s) - started )) s (emulated)"
  curl -sf -F image=@tests/data/pizza.jpg http://127.0.0.1:8010/predict | tee "$REPORT_DIR/arm64-predict.json"
  echo; grep -q '"pizza"' "$REPORT_DIR/arm64-predict.json"
  # Which runtime and precision the start-up choice made there, and what it timed.
  # A reduced precision is offered only on the architecture its gate ran on (x86_64 here).
  curl -sf http://127.0.0.1:8010/ | "$BIN/python" -c 'import json, sys; runtime = json.load(sys.stdin)["runtime"]
print("arm64 runtime:", json.dumps(runtime)); assert runtime["runtime"] in ("openvino", "onnxruntime"), runtime' \
    | tee "$REPORT_DIR/arm64-runtime.txt"
  podman rm -f tikka-arm64-smoke >/dev/null
  trap - EXIT
  step "arm64 Bento: the reduced precisions' agreement gate, on the emulated CPU"
  # The import gate's check again (tikka/tools/quantize.py), with the image's own runtimes on
  # the CPU QEMU emulates (its "max" model: bf16, i8mm, SVE2), for every reduced precision the
  # model has. The gate ran on x86_64, so none is offered on arm64 (the runtime above is
  # fp32); the figures say why. tikka/tools is not in the Bento: the checkout is mounted.
  # A few images only: one takes seconds under emulation.
  podman run --rm --platform linux/arm64 -v "$ROOT:/checkout:ro" -w /checkout -e PYTHONPATH=/checkout \
    --entrypoint sh "$image" -c "python -m tikka.tools.quantize $ARM64_GATE_IMAGES /home/bentoml/bento/models/*/*/ --every" \
    | tail -1 | tee "$REPORT_DIR/arm64-agreement.json"
  step "multi-arch manifest (built, not pushed)"
  make --no-print-directory push-images IMAGES=tikka-backend PLATFORMS="linux/amd64 linux/arm64"
  podman manifest inspect "ghcr.io/tikkamasalai/tikka-backend:$sha" | grep -o '"architecture": "[a-z0-9]*"' | sort -u
fi
step "done"

{
  echo "# make test-images, $(date -u +%F) on $(uname -m), $(nproc) cores"
  echo
  echo "| step | duration |"; echo "|---|---|"
  printf '%s\n' "${timings[@]}"
  echo "| total | $(( $(date +%s) - t0 )) s |"
  echo
  echo "| image | size |"; echo "|---|---|"
  podman images --format '| {{.Repository}}:{{.Tag}} | {{.Size}} |' | grep -E 'localhost/tikka-(backend|frontend|llm-sidecar):'"$sha"
  echo
  echo "Container memory after the checks (podman stats):"; echo '```'; cat "$REPORT_DIR/memory.txt"; echo '```'
  echo; cat "$REPORT_DIR/cpu-quota.md"
  [ -f "$REPORT_DIR/arm64-runtime.txt" ] && { echo; cat "$REPORT_DIR/arm64-runtime.txt"; }
  [ -f "$REPORT_DIR/arm64-agreement.json" ] && { echo; echo "arm64 agreement gate (emulated):"; cat "$REPORT_DIR/arm64-agreement.json"; }
  echo; echo "podman kube play of docker/k8s's gateway and classifier:"; echo '```'; grep -E '^(PASS|FAIL)|checks passed' "$REPORT_DIR/kube-play.txt"; echo '```'
} > "$report"
cat "$report"
