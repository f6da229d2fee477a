#!/usr/bin/env bash
# The images' registry path and tags, from GitHub's own variables: the one place for
# the scheme that images.yml pushes and deploy.yml pulls.
#   registry  <host>/<owner, lower case>   (image names must be lower case; owners need not be)
#   tags      the commit's first 12 hex digits, and the version on a v<version> tag push
# Reads GITHUB_REPOSITORY_OWNER, GITHUB_SHA, GITHUB_REF; REGISTRY_HOST (default ghcr.io)
# names another registry (make test-delivery's local stand-in). Prints key=value lines,
# and appends them to $GITHUB_OUTPUT when GitHub gives one.
set -euo pipefail
owner=${GITHUB_REPOSITORY_OWNER:?GITHUB_REPOSITORY_OWNER is not set}
sha=${GITHUB_SHA:?GITHUB_SHA is not set}
[[ $sha =~ ^[0-9a-f]{40}$ ]] || { echo "GITHUB_SHA is not a full commit hash: $sha" >&2; exit 2; }
registry="${REGISTRY_HOST:-ghcr.io}/${owner,,}"
sha_tag=${sha:0:12}
tags=("$sha_tag")
if [[ ${GITHUB_REF:-} == refs/tags/v* ]]; then
  version=${GITHUB_REF#refs/tags/v}
  # The grammar of an image tag (the OCI distribution spec).
  [[ $version =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { echo "v$version cannot be an image tag" >&2; exit 2; }
  tags+=("$version")
fi
out=$(printf 'registry=%s\nsha_tag=%s\ntags=%s\n' "$registry" "$sha_tag" "${tags[*]}")
echo "$out"
if [ -n "${GITHUB_OUTPUT:-}" ]; then echo "$out" >> "$GITHUB_OUTPUT"; fi
