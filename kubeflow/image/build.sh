#!/usr/bin/env bash
# Builds the pipeline's image on a machine that reaches PyPI and Debian's mirror but neither
# Docker Hub nor, from inside a build, PyPI (what `make image` runs):
#
#   kubeflow/image/build.sh [--cuda] [--tag TAG]...
#
#   1. a Docker engine: started if it is not running (dockerd, installed from Debian's docker.io
#      package if missing: the docker CLI alone cannot build);
#   2. base_image.sh: the local stand-in for python:3.11.7-slim-bookworm (skipped if it exists);
#   3. wheelhouse.sh: every wheel of requirements.lock (and requirements-cuda.lock with --cuda)
#      into build/wheelhouse (skips what is there);
#   4. docker build with BASE_IMAGE=that base, WHEELHOUSE=local, CUDA=0 or 1.
#
# Tags image-transfer-learning:<git short sha> and image-transfer-learning:latest, or
# <sha>-cuda and latest-cuda with --cuda; the sha gets -dirty if the checkout has changes not
# committed, since the image has them. --tag (repeatable) replaces both. Prints each step's time
# and the image's size.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/kubeflow/image
NAME=image-transfer-learning
BASE=${BASE_IMAGE_TAG:-image-transfer-learning/python:3.11.7-slim-bookworm}
WHEELHOUSE_DIR=$repo/build/wheelhouse
CUDA=0
TAGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --cuda) CUDA=1 ;;
    --tag) TAGS+=("$2"); shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "build.sh: $*"; }
times=()
step_start=0
begin() { step_start=$(date +%s); log "== $1"; }
end() { times+=("$(printf '%-12s %5ss' "$1" $(( $(date +%s) - step_start )))"); }
total_start=$(date +%s)

# 1. A Docker engine.
begin docker
if ! docker info > /dev/null 2>&1; then
  if ! command -v dockerd > /dev/null; then
    if command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
      log "no Docker engine here (dockerd missing): installing Debian's docker.io"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io > /dev/null
    else
      echo "build.sh: no Docker engine (dockerd) on this machine, and no way to install one" >&2
      exit 1
    fi
  fi
  log "Docker is not running: starting dockerd (log: /tmp/dockerd.log)"
  nohup dockerd > /tmp/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
  docker info > /dev/null 2>&1 || { tail -20 /tmp/dockerd.log >&2; echo "build.sh: dockerd did not start" >&2; exit 1; }
fi
# The Dockerfile needs BuildKit (RUN --mount). Docker 23+ clients build with it through the buildx
# plugin; older clients (Debian bookworm's docker.io is 20.10) have it built in.
builder=
for cli in docker /usr/bin/docker; do
  command -v "$cli" > /dev/null || continue
  if "$cli" buildx version > /dev/null 2>&1; then builder=$cli; break; fi
  major=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  if [ -n "$major" ] && [ "$major" -ge 18 ] && [ "$major" -lt 23 ]; then builder=$cli; break; fi
done
[ -n "$builder" ] || { echo "build.sh: no docker client with BuildKit (install the buildx plugin)" >&2; exit 1; }
log "building with $(command -v "$builder") $("$builder" version --format '{{.Client.Version}}' 2>/dev/null) (BuildKit)"
end docker

# 2. The base image.
begin base-image
"$here/base_image.sh" --tag "$BASE"
end base-image

# 3. The wheels.
begin wheelhouse
if [ "$CUDA" = 1 ]; then
  "$here/wheelhouse.sh" "$repo/requirements.lock" "$WHEELHOUSE_DIR" --cuda
else
  "$here/wheelhouse.sh" "$repo/requirements.lock" "$WHEELHOUSE_DIR"
fi
end wheelhouse

# 4. The image.
if [ ${#TAGS[@]} = 0 ]; then
  sha=$(git -C "$repo" rev-parse --short HEAD)
  if [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]; then
    sha=$sha-dirty
    log "the checkout has uncommitted changes: tagging $sha"
  fi
  suffix=$([ "$CUDA" = 1 ] && echo -cuda || true)
  TAGS=("$NAME:$sha$suffix" "$NAME:latest$suffix")
fi
tag_args=()
for t in "${TAGS[@]}"; do tag_args+=(-t "$t"); done
data_wheels=$(sed -n 's/^DATA_WHEELS[[:space:]]*:\{0,1\}=[[:space:]]*//p' "$repo/Makefile" | head -1)

begin image
DOCKER_BUILDKIT=1 "$builder" build --progress=plain \
  --build-arg BASE_IMAGE="$BASE" \
  --build-arg WHEELHOUSE=local \
  --build-arg CUDA="$CUDA" \
  ${data_wheels:+--build-arg DATA_WHEELS="$data_wheels"} \
  "${tag_args[@]}" "$repo"
end image

size=$(docker image inspect -f '{{.Size}}' "${TAGS[0]}")
log "built ${TAGS[*]}: $(( size / 1000000 )) MB"
for t in "${times[@]}"; do log "  $t"; done
log "  total        $(( $(date +%s) - total_start ))s"
