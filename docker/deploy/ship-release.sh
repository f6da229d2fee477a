#!/usr/bin/env bash
# deploy.yml's copy step: a release's docker/ files to DIR/releases/TAG on the VM, and the
# deploy script beside them. TARGET is user@host (over SSH), or empty for a local DIR (the
# stand-in VM of make test-delivery). The operator's files are never sent.
#   docker/deploy/ship-release.sh TARGET DIR TAG
set -euo pipefail
cd "$(dirname "$0")/../.."
target=$1 dir=$2 tag=$3
dest=$dir/releases/$tag/
if [ -n "$target" ]; then
  ssh "$target" mkdir -p "$dest"
  dest=$target:$dest
else
  mkdir -p "$dest"
fi
rsync -a --delete --exclude /.env --exclude /certs --exclude /frontend-secrets.toml docker/ "$dest"
