#!/usr/bin/env bash
# deploy.yml: the deploy key and the VM's host key, from SSH_KEY and KNOWN_HOSTS.
set -euo pipefail
install -m 700 -d ~/.ssh
printf '%s\n' "${SSH_KEY:?}" > ~/.ssh/id_ed25519 && chmod 600 ~/.ssh/id_ed25519
printf '%s\n' "${KNOWN_HOSTS:?}" > ~/.ssh/known_hosts
