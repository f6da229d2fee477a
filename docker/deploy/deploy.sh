#!/usr/bin/env bash
# Roll a release out on the VM with no failed request, or roll it back. deploy.yml runs
# it over SSH; make test-delivery runs it against a stand-in VM (podman-compose).
#   deploy.sh DIR TAG         deploy TAG, whose docker/ files are in DIR/releases/TAG
#   deploy.sh DIR --rollback  deploy the previous release again (its files and its tag)
# The operator's files, which a deploy never replaces: .env (settings, keys; the
# deploy owns two keys in it, TIKKA_IMAGE_TAG and COMPOSE_PROFILES), certs/ and
# frontend-secrets.toml, in DIR/live: the running release's copy of docker/, where
# Compose runs. DIR/state.env says which tag and slot serve, and the previous tag.
#
# Blue/green: the backend runs in slot backend-blue or backend-green. The new release
# starts in the idle slot beside the old one; once its /readyz answers, nginx is pointed
# at it (nginx/backend.conf, nginx -t, then a graceful reload: old workers finish their
# requests) and the old slot is stopped. Other services are updated with `up -d`.
#
# Exit codes: 0 deployed; 2 failed before anything changed on the VM (nothing rolled
# back); 1 failed after, and rolled back to the previous release, which passed its
# health check again; 3 failed, and the rollback failed too.
# Environment: COMPOSE (default "docker compose"), ENGINE (docker), TIKKA_READY_TIMEOUT_S (300),
# TIKKA_SERVICES in .env (the services besides the backend; default: all of them).
set -uo pipefail
dir=$(cd "${1:?usage: deploy.sh DIR TAG|--rollback}" && pwd)
target=${2:?usage: deploy.sh DIR TAG|--rollback}
read -ra COMPOSE_CMD <<< "${COMPOSE:-docker compose}"
ENGINE=${ENGINE:-docker}
READY_TIMEOUT_S=${TIKKA_READY_TIMEOUT_S:-300}
live=$dir/live

phase() { printf '%s phase %s\n' "$(date +%s.%N | cut -c1-14)" "$*"; }
fail() { printf '%s error %s\n' "$(date +%s.%N | cut -c1-14)" "$*" >&2; }

# key=value files: .env (the operator's, with the two keys the deploy owns) and state.env.
get() { sed -n "s/^$2=//p" "$1" 2>/dev/null | tail -n 1; }
put() {  # put FILE KEY VALUE: replace or append, keeping every other line
  local tmp; tmp=$(mktemp "$1.XXXX")
  { grep -v "^$2=" "$1" 2>/dev/null || true; echo "$2=$3"; } > "$tmp" && mv "$tmp" "$1"
}

compose() {  # compose [--profile P]... ARGS: in live/, with the files .env's COMPOSE_FILE names
  local files=() f
  IFS=: read -ra f <<< "$(get "$live/.env" COMPOSE_FILE)"
  for name in "${f[@]:-docker-compose.yml}"; do files+=(-f "$name"); done
  (cd "$live" && "${COMPOSE_CMD[@]}" "${files[@]}" "$@")
}
other_services() {  # every service but the backend slots, or TIKKA_SERVICES
  local wanted; wanted=$(get "$live/.env" TIKKA_SERVICES)
  if [ -n "$wanted" ]; then echo "$wanted"; return; fi
  compose config --services | grep -vx 'backend-blue\|backend-green' | tr '\n' ' '
}
update_other_services() {  # update_other_services SLOT: nginx last (its upstreams must resolve)
  local services running=0; services=$(other_services | sed 's/\bnginx\b//g')
  compose exec -T nginx true >/dev/null 2>&1 && running=1
  if [ -n "${services// /}" ]; then compose --profile "$1" up -d $services || return 1; fi
  compose --profile "$1" up -d --no-deps nginx || return 1
  # A recreated front end has a new address; nginx resolves names when it (re)loads.
  if [ $running = 1 ]; then reload_nginx; fi
}
reload_nginx() {  # nginx -t, then a graceful reload: old workers finish what they hold
  compose exec -T nginx nginx -t -q || { fail "nginx -t refused the configuration"; return 1; }
  compose exec -T nginx nginx -s reload || return 1
  sleep 1
  # Wait until the old workers are gone before anything they talk to stops (bounded;
  # the title is nginx's own for a draining worker).
  for _ in $(seq 120); do
    compose exec -T nginx sh -c 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\0" " " | grep -q "shutting [d]own"' || break
    sleep 0.5
  done
}
in_slot_ready() {  # the slot's own /readyz, from inside its container
  compose --profile "$1" exec -T "backend-$1" python -c \
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)" >/dev/null 2>&1
}
through_edge_ready() {  # the API's /readyz and the app's health through nginx, as clients see them
  compose exec -T nginx curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8000/readyz >/dev/null 2>&1 &&
    compose exec -T nginx curl -fsSk -o /dev/null --max-time 5 https://127.0.0.1/_stcore/health >/dev/null 2>&1
}
point_nginx_at() {  # write backend.conf for the slot; test and reload when nginx runs
  sed -i "s/server backend-[a-z]*:8000;/server backend-$1:8000;/" "$live/nginx/backend.conf"
  grep -q "server backend-$1:8000;" "$live/nginx/backend.conf" || { fail "nginx/backend.conf names no slot"; return 1; }
  if compose exec -T nginx true >/dev/null 2>&1; then reload_nginx; fi
}
sync_release() {  # sync_release TAG: live/ becomes that release's docker/, operator files kept
  # Files are rewritten in place, never replaced by new directories: nginx's folder mount
  # must keep seeing them. (No rsync: the VM need not have it.)
  local release=$dir/releases/$1 path
  mkdir -p "$live"
  (cd "$live" && find . -mindepth 1 -depth) | while read -r path; do
    case "$path" in ./.env | ./certs | ./certs/* | ./frontend-secrets.toml) continue ;; esac
    [ -e "$release/$path" ] || rm -rf "${live:?}/$path"
  done
  cp -a "$release/." "$live/"
}

active_tag=$(get "$dir/state.env" ACTIVE_TAG)
active_slot=$(get "$dir/state.env" ACTIVE_SLOT)
previous_tag=$(get "$dir/state.env" PREVIOUS_TAG)
if [ "$target" = --rollback ]; then
  [ -n "$previous_tag" ] || { fail "no previous release to roll back to"; exit 2; }
  tag=$previous_tag
else
  tag=$target
fi
phase "deploy $tag (serving: ${active_tag:-nothing})"

# ---- 1. Checks that change nothing: the release's files, and its images pulled. ----
[ -f "$dir/releases/$tag/docker-compose.yml" ] || { fail "no release files in $dir/releases/$tag"; exit 2; }
if [ "$tag" = "$active_tag" ]; then phase "done: $tag is already serving"; exit 0; fi
new_slot=blue; [ "$active_slot" = blue ] && new_slot=green
# Pull from a scratch copy of the release, with the operator's .env and the new tag.
staging=$(mktemp -d "$dir/.staging.XXXX"); trap 'rm -rf "$staging"' EXIT
cp -a "$dir/releases/$tag/." "$staging/"
cp "$live/.env" "$staging/.env" || { fail "no $live/.env: write the operator's settings there first"; exit 2; }
put "$staging/.env" TIKKA_IMAGE_TAG "$tag"
# The project's own images at the new tag, as the release's Compose files name them
# (third-party images are pinned by version: `up` pulls them if they are missing).
registry=$(get "$staging/.env" TIKKA_REGISTRY)
IFS=: read -ra files <<< "$(get "$staging/.env" COMPOSE_FILE)"
images=$(cd "$staging" && grep -ho '/tikka-[a-z-]*:${TIKKA_IMAGE_TAG' "${files[@]:-docker-compose.yml}" | sort -u \
  | sed "s|^/\(tikka-[a-z-]*\):.*|${registry:-ghcr.io/tikkamasalai}/\1:$tag|")
phase "pull $(echo $images)"
for image in $images; do
  if ! "$ENGINE" pull -q "$image" >/dev/null; then
    fail "$image cannot be pulled; nothing on the VM was changed"
    exit 2
  fi
done

# ---- 2. The change. From here on a failure rolls back. ----
rollback() {
  phase "rollback to ${active_tag:-nothing}"
  local ok=0
  if [ -n "$active_tag" ]; then
    sync_release "$active_tag" && put "$live/.env" TIKKA_IMAGE_TAG "$active_tag" \
      && put "$live/.env" COMPOSE_PROFILES "$active_slot" \
      && point_nginx_at "$active_slot" && update_other_services "$active_slot" || ok=1
  fi
  compose --profile "$new_slot" down "backend-$new_slot" >/dev/null 2>&1 || true
  if [ -n "$active_tag" ]; then
    phase "health check after the rollback"
    for _ in $(seq 60); do through_edge_ready && break; sleep 1; done
    through_edge_ready || ok=1
  fi
  if [ $ok = 0 ]; then phase "rolled back: ${active_tag:-nothing} serves"; exit 1; fi
  fail "the rollback did not bring ${active_tag:-the stack} back healthy"; exit 3
}
trap 'rm -rf "$staging"' EXIT
phase "release files"
sync_release "$tag" || rollback
cp "$staging/.env" "$live/.env" || rollback
# nginx keeps the serving slot until the new one is ready.
[ -n "$active_slot" ] && { sed -i "s/server backend-[a-z]*:8000;/server backend-$active_slot:8000;/" "$live/nginx/backend.conf" || rollback; }

phase "start backend-$new_slot"
compose --profile "$new_slot" up -d --no-deps --force-recreate "backend-$new_slot" || rollback
phase "wait for backend-$new_slot /readyz (at most ${READY_TIMEOUT_S} s)"
deadline=$(( $(date +%s) + READY_TIMEOUT_S ))
until in_slot_ready "$new_slot"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then fail "backend-$new_slot was not ready in ${READY_TIMEOUT_S} s"; rollback; fi
  sleep 2
done

phase "switch nginx to backend-$new_slot"
point_nginx_at "$new_slot" || rollback
put "$live/.env" COMPOSE_PROFILES "$new_slot"
phase "update $(other_services)"
update_other_services "$new_slot" || rollback
phase "check through nginx"
for _ in $(seq 60); do through_edge_ready && break; sleep 1; done
through_edge_ready || { fail "not ready through nginx"; rollback; }

if [ -n "$active_slot" ]; then
  phase "stop backend-$active_slot"
  compose --profile "$active_slot" down "backend-$active_slot" >/dev/null 2>&1
fi
printf 'ACTIVE_TAG=%s\nACTIVE_SLOT=%s\nPREVIOUS_TAG=%s\n' "$tag" "$new_slot" "$active_tag" > "$dir/state.env"
phase "deployed $tag in backend-$new_slot"
