#!/usr/bin/env bash
# Build the CPU image on this machine, where no image registry and no PyTorch index can be reached: on a local
# Debian base (docker/local_base.sh makes it when missing), with this machine's pip settings (its CA bundle, and
# the torch wheel from its local wheels) handed to the build stage through docker/build-time/, emptied afterwards.
# Prints the build time and the image's size. Needs a running Docker engine (`dockerd &` as root).
#   docker/build_local.sh [TAG]        (default recast:cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-recast:cpu}"
BASE="${RECAST_BASE:-recast-base:bookworm}"
docker image inspect "$BASE" >/dev/null 2>&1 || docker/local_base.sh "$BASE"
extra=docker/build-time
trap 'find "$extra" -mindepth 1 ! -name README.md -exec rm -rf {} +' EXIT
mkdir -p "$extra/wheels"
conf="[global]\ntimeout = 180\nfind-links = /tmp/build-time/wheels\n"
setting() { pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" | head -1; }
cert="${PIP_CERT:-$(setting cert)}"
if [ -n "$cert" ] && [ -f "$cert" ]; then
  cp "$cert" "$extra/ca.crt"
  conf="${conf}cert = /tmp/build-time/ca.crt\n"
fi
links="$(setting find-links)"
for folder in $links; do
  cp "$folder"/torch-2.13.0*-cp311-*.whl "$extra/wheels/" 2>/dev/null || true
done
printf "%b" "$conf" > "$extra/pip.conf"
began=$(date +%s)
docker build --network host -f docker/Dockerfile.cpu --build-arg BASE="$BASE" \
  --build-arg TORCH_INDEX=https://pypi.org/simple -t "$TAG" .
echo "$TAG: built in $(( $(date +%s) - began )) s, $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
