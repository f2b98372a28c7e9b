"""Makes a Keras MobileNetV2 pad its stride-2 convolutions exactly as torchvision does.

Keras pads an even-sized input of a 3x3 stride-2 convolution by one pixel at the bottom and
right only ("same" padding, or `correct_pad`); torchvision pads one pixel on every side. The
output grids therefore sample the image one pixel apart, and weights trained with one
convention lose a little accuracy under the other. Torchvision also pads the first
convolution's input with zeros *after* its input normalisation, which in Keras' [-1, 1]
input range is the value 2 * mean - 1 per channel, not 0.

(At odd sizes Keras already pads symmetrically; only the first convolution's value differs.)

`with_torchvision_padding(base)` returns the same network, sharing no state with `base`,
with those paddings: with the weights converted from torchvision it computes what
torchvision computes. The layer names and weights are unchanged.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

# torchvision's zero after normalisation, expressed in Keras' x / 127.5 - 1 input range.
FIRST_CONV_PAD_VALUE = (2 * np.array([0.485, 0.456, 0.406]) - 1).tolist()


@tf_keras.utils.register_keras_serializable(package='image_pipeline')
class SymmetricPadConv2D(tf_keras.layers.Conv2D):
    """A 'valid' Conv2D that first pads one pixel on every side with a per-channel value."""

    def __init__(self, pad_value=None, **kwargs):
        kwargs['padding'] = 'valid'
        super().__init__(**kwargs)
        self.pad_value = list(pad_value) if pad_value is not None else None

    def call(self, inputs):
        if self.pad_value is None:
            padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        else:
            value = tf.constant(self.pad_value, inputs.dtype)
            padded = tf.pad(inputs - value, [[0, 0], [1, 1], [1, 1], [0, 0]]) + value
        return super().call(padded)

    def get_config(self):
        return {**super().get_config(), 'pad_value': self.pad_value}


def _torchvision_layer(layer: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
    config = layer.get_config()
    if isinstance(layer, tf_keras.layers.ZeroPadding2D):
        return tf_keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name=layer.name)
    if layer.name == 'Conv1':
        return SymmetricPadConv2D(pad_value=FIRST_CONV_PAD_VALUE, **config)
    return layer.__class__.from_config(config)


def with_torchvision_padding(base: tf_keras.Model) -> tf_keras.Model:
    """A copy of a Keras MobileNetV2 (with its weights) that pads like torchvision."""
    clone = tf_keras.models.clone_model(base, clone_function=_torchvision_layer)
    clone.set_weights(base.get_weights())
    return clone
