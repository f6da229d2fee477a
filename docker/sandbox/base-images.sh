#!/usr/bin/env bash
# Stand-ins for the public base images, for machines that cannot reach a registry
# (this project's CI and dev boxes). Each is built from Debian's own packages on a
# debootstrap root and tagged with the public name the Dockerfiles and Compose files
# use, so those files stay exactly what a normal Docker host runs.
#   docker/sandbox/base-images.sh amd64|arm64
# The debootstrap tarball is cached in $TIKKA_IMAGE_CACHE; a second run takes seconds.
set -euo pipefail
arch=${1:?usage: base-images.sh amd64|arm64}
here=$(cd "$(dirname "$0")" && pwd)
cache=${TIKKA_IMAGE_CACHE:-$HOME/.cache/tikka-images}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"

if [ "$arch" != "$(dpkg --print-architecture)" ]; then
  # Emulation for foreign-arch RUN steps (qemu-user-static registers the handler).
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi

tarball=$cache/debian-bookworm-$arch.tar
base=localhost/debian-base:bookworm-$arch
# The debootstrap root only when the base image is not there already.
if ! podman image exists "$base"; then
  if [ ! -s "$tarball" ]; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap bookworm ($arch) from $mirror"
    debootstrap --arch="$arch" --variant=minbase bookworm "$root" "$mirror" >/dev/null
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
      "$mirror" "$mirror" > "$root/etc/apt/sources.list"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  fi
  podman import --arch "$arch" "$tarball" "$base" >/dev/null
fi

# name -> Containerfile; rebuilt only when missing for this arch.
stand_in() {
  local name=$1 file=$2 have
  have=$(podman image inspect --format '{{.Architecture}}' "$name-$arch" 2>/dev/null || true)
  if [ "$have" != "$arch" ]; then
    podman build --quiet --platform "linux/$arch" --build-arg BASE="$base" \
      -f "$here/$file" -t "$name-$arch" "$here" >/dev/null
  fi
  podman tag "$name-$arch" "$name"
}
stand_in docker.io/library/python:3.11-slim python.Containerfile
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
  # Only the stack's own platform needs these (the stack runs natively).
  stand_in docker.io/library/nginx:1.27-bookworm nginx.Containerfile
  stand_in docker.io/prom/prometheus:v2.53.4 prometheus.Containerfile
fi
echo "stand-in base images ready for $arch"
