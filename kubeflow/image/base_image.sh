#!/usr/bin/env bash
# Builds a local stand-in for the official python:3.11.7-slim-bookworm image, for machines that
# reach Debian's mirror but not Docker Hub: a debootstrapped bookworm (minbase) plus this
# machine's CPython 3.11.7 in /usr/local, with pip on PATH, as in the official image.
#
#   kubeflow/image/base_image.sh [--force] [--tag TAG]
#
# The lock file is frozen from Python 3.11.7 (its environment markers differ from Debian's 3.11.2,
# e.g. async-timeout for python_full_version < "3.11.3"), hence CPython 3.11.7 rather than
# Debian's python3. It is copied from PYTHON_PREFIX (default /root/.pyenv/versions/3.11.7) without
# its site-packages: pip and setuptools come from the interpreter's own ensurepip, as in a fresh
# install. The Debian packages are the ones its binary and lib-dynload/*.so need (ldd), as the
# official image keeps them (tkinter excluded there too), plus ca-certificates, netbase, tzdata.
#
# Idempotent: does nothing if TAG exists, unless --force. Needs root, debootstrap (installed from
# Debian if missing) and a running Docker engine.
set -euo pipefail

TAG=${BASE_IMAGE_TAG:-image-transfer-learning/python:3.11.7-slim-bookworm}
PYTHON_PREFIX=${PYTHON_PREFIX:-/root/.pyenv/versions/3.11.7}
PYTHON_VERSION=3.11.7
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=0

while [ $# -gt 0 ]; do
  case $1 in
    --force) FORCE=1 ;;
    --tag) TAG=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "base_image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

start=$(date +%s)
log() { echo "base_image.sh: $*"; }

if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG exists, skipped (--force to rebuild)"
  exit 0
fi

have=$("$PYTHON_PREFIX/bin/python3" -c 'import platform; print(platform.python_version())')
if [ "$have" != "$PYTHON_VERSION" ]; then
  echo "base_image.sh: $PYTHON_PREFIX is Python $have, not $PYTHON_VERSION" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

# Libraries of the interpreter and its extension modules (tkinter left out, as in the official
# slim image: Tk is a GUI), and ca-certificates, netbase, tzdata as in the official image.
# Most of them are in minbase already; naming them keeps the list honest if that changes.
PACKAGES=ca-certificates,netbase,tzdata
PACKAGES+=,libbz2-1.0,libcrypt1,libffi8,liblzma5,libncursesw6,libtinfo6,libnsl2,libtirpc3
PACKAGES+=,libreadline8,libsqlite3-0,libssl3,libuuid1,zlib1g

work=$(mktemp -d /var/tmp/base-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

log "debootstrap $SUITE (minbase) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" \
  > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

log "copying CPython $PYTHON_VERSION from $PYTHON_PREFIX to /usr/local (without site-packages)"
# Only the interpreter's own files: no site-packages (whatever else this machine installed there)
# and, in bin/, no entry points of those packages.
tar -C "$PYTHON_PREFIX" -c \
    --exclude='lib/python3.11/site-packages/*' \
    --exclude='__pycache__' \
    include lib share \
  | tar -C "$root/usr/local" -x
mkdir -p "$root/usr/local/bin"
for f in python python3 python3.11 python-config python3-config python3.11-config python3.11-gdb.py \
         pydoc pydoc3 pydoc3.11 2to3 2to3-3.11 idle idle3 idle3.11; do
  if [ -e "$PYTHON_PREFIX/bin/$f" ] || [ -L "$PYTHON_PREFIX/bin/$f" ]; then
    cp -a "$PYTHON_PREFIX/bin/$f" "$root/usr/local/bin/"
  fi
done

# The build-time prefix appears in sysconfig's data, python-config, pkg-config files and the
# scripts' shebangs; /usr/local is where the interpreter is now (sys.prefix is computed at run
# time from the executable's location, so only these texts need it).
grep -rlI --null "$PYTHON_PREFIX" "$root/usr/local/bin" "$root/usr/local/lib" 2>/dev/null \
  | xargs -0 -r sed -i "s#$PYTHON_PREFIX#/usr/local#g"

# As the official image: no tests, no static library, no bytecode.
find "$root/usr/local" -depth \
  \( \( -type d -a \( -name test -o -name tests -o -name idle_test \) \) \
     -o \( -type f -a \( -name '*.pyc' -o -name '*.pyo' -o -name 'libpython*.a' \) \) \) \
  -exec rm -rf '{}' +

# The binary's RUNPATH names the build prefix; /usr/local/lib is in Debian's ld.so.conf.
chroot "$root" /sbin/ldconfig
# pip and setuptools from the interpreter's own bundled wheels (no network needed).
chroot "$root" /usr/local/bin/python3 -m ensurepip --default-pip > "$work/ensurepip.log" 2>&1 \
  || { cat "$work/ensurepip.log" >&2; exit 1; }
find "$root/usr/local" -depth -name '__pycache__' -exec rm -rf '{}' +
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/debootstrap

# Every shared library the interpreter and its modules need must resolve (tkinter excepted).
missing=$(chroot "$root" /bin/sh -c \
  'for f in /usr/local/bin/python3.11 /usr/local/lib/libpython3.11.so.1.0 /usr/local/lib/python3.11/lib-dynload/*.so; do
     case $f in *_tkinter*) continue ;; esac
     ldd "$f" | grep "not found" | sed "s#^#$f: #"
   done' || true)
if [ -n "$missing" ]; then
  echo "base_image.sh: missing shared libraries:" >&2
  echo "$missing" >&2
  exit 1
fi

log "importing as $TAG"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "ENV PYTHON_VERSION=$PYTHON_VERSION" \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null

docker run --rm "$TAG" python3 -c "
import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid, hashlib, curses, decimal, json, sys, platform
assert platform.python_version() == '$PYTHON_VERSION', platform.python_version()
assert sys.prefix == '/usr/local', sys.prefix
ssl.create_default_context()  # loads Debian's CA certificates
print('python', platform.python_version(), 'in', sys.prefix, '-', ssl.OPENSSL_VERSION)
"
docker run --rm "$TAG" pip --version
size=$(docker image inspect -f '{{.Size}}' "$TAG")
log "built $TAG ($((size / 1000000)) MB) in $(( $(date +%s) - start ))s"
