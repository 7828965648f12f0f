#!/usr/bin/env bash
# A local Debian 12 base image for building the CPU image where no image registry can be reached: debootstrap's
# minimal Debian with Python 3.11 and its venv module, imported into the Docker engine as recast-base:bookworm.
# Operators build on the public python:3.11-slim-bookworm instead (the Dockerfile's default). Needs root,
# debootstrap and a running Docker engine; Debian's package mirror must be reachable.
set -euo pipefail
TAG="${1:-recast-base:bookworm}"
ROOT="$(mktemp -d "${TMPDIR:-/tmp}/recast-base-XXXXXX")"
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" >/dev/null
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | docker import --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "$TAG: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
