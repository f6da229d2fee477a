#!/usr/bin/env bash
# deploy.yml: log the VM's Docker in to GHCR with a read-only token (a token with
# read:packages only), passed on standard input so it never shows in a process list.
#   GHCR_TOKEN=... docker/delivery/vm-login.sh user@vm GHCR_USER
set -euo pipefail
target=${1:?usage: vm-login.sh TARGET GHCR_USER} user=${2:?usage: vm-login.sh TARGET GHCR_USER}
printf '%s' "${GHCR_TOKEN:?}" | ssh "$target" docker login ghcr.io -u "$user" --password-stdin
