#!/usr/bin/env bash
# Join the per-arch images (`make images`) into one multi-arch manifest per tag and,
# with PUSH=1, push it to the registry. `make push-images` calls this.
#   docker/push-images.sh <engine> <registry> <local tag> "<tags>" "<platforms>" "<images>"
# e.g. podman ghcr.io/acme 1a2b3c4d5e6f "0.1.0 1a2b3c4d5e6f" "linux/amd64 linux/arm64" tikka-backend
set -euo pipefail
engine=$1 registry=$2 local_tag=$3 tags=$4 platforms=$5 images=$6
for image in $images; do
  for tag in $tags; do
    ref=$registry/$image:$tag
    members=()
    for platform in $platforms; do
      arch=${platform##*/}
      if [ "$engine" = podman ]; then
        members+=("containers-storage:localhost/$image:$local_tag-$arch")
      else
        # Docker's manifest lists point at images already in the registry.
        docker tag "$image:$local_tag-$arch" "$ref-$arch"
        [ "${PUSH:-0}" = 1 ] && docker push "$ref-$arch"
        members+=("$ref-$arch")
      fi
    done
    "$engine" manifest rm "$ref" >/dev/null 2>&1 || true
    "$engine" manifest create "$ref" "${members[@]}"
    if [ "${PUSH:-0}" = 1 ]; then
      if [ "$engine" = podman ]; then podman manifest push --all "$ref" "docker://$ref"; else docker manifest push "$ref"; fi
    else
      if [ "$engine" = podman ]; then push="podman manifest push --all $ref docker://$ref"; else push="docker manifest push $ref"; fi
      echo "built $ref ($platforms); to push: PUSH=1 make push-images, or $push"
    fi
  done
done
