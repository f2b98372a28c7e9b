"""Random image augmentation that moves every view of an image the same way.

With several backbones the model receives the same photo several times, resized and scaled
differently for each; flipping one view and not another would show the backbones different
pictures. This layer draws one flip, one rotation, one zoom and one contrast factor per
image and applies them to all its views. It is active in training only (Keras passes
`training`), like Keras' own RandomFlip/RandomRotation, whose conventions it follows:
rotation is a fraction of a full turn (0.2: up to +-72 degrees), zoom and contrast a relative
range (0.1: factors in [0.9, 1.1]).

Views are already scaled for their backbone. Flip, rotation and zoom commute with the
per-pixel affine scaling every backbone uses, and contrast ((x - mean) * f + mean, per image
and channel) does too, so augmenting after preprocessing equals augmenting the raw image.
"""
from __future__ import annotations

import math
from typing import Dict

import tensorflow as tf
import tf_keras
from tf_keras.src.engine.base_layer import BaseRandomLayer
from tf_keras.src.layers.preprocessing import image_preprocessing


@tf_keras.utils.register_keras_serializable(package='image_pipeline')
class SharedAugmentation(BaseRandomLayer):
    """Augments a dict of views of the same images with the same random draws."""

    def __init__(self, flip: bool = True, rotation: float = 0.2, zoom: float = 0.0, contrast: float = 0.0,
                 seed=None, **kwargs):
        super().__init__(seed=seed, force_generator=True, **kwargs)
        self.flip, self.rotation, self.zoom, self.contrast, self.seed = flip, rotation, zoom, contrast, seed

    def _uniform(self, batch, spread):
        return self._random_generator.random_uniform([batch], -spread, spread)

    def call(self, views: Dict[str, tf.Tensor], training=None):
        if not training:
            return dict(views)
        first = next(iter(views.values()))
        batch = tf.shape(first)[0]
        flips = self._random_generator.random_uniform([batch]) < 0.5 if self.flip else None
        angles = self._uniform(batch, self.rotation * 2 * math.pi) if self.rotation else None
        zooms = self._uniform(batch, self.zoom) if self.zoom else None
        contrasts = 1.0 + self._uniform(batch, self.contrast) if self.contrast else None
        return {key: self._augment(images, flips, angles, zooms, contrasts) for key, images in views.items()}

    @staticmethod
    def _augment(images, flips, angles, zooms, contrasts):
        if flips is not None:
            images = tf.where(flips[:, None, None, None], tf.image.flip_left_right(images), images)
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)
        if angles is not None:
            images = image_preprocessing.transform(
                images, image_preprocessing.get_rotation_matrix(angles, height, width), fill_mode='reflect')
        if zooms is not None:
            # get_zoom_matrix takes the sampling stride: 1 - z shows a bigger (zoomed-in) image.
            stride = 1.0 - zooms[:, None]
            images = image_preprocessing.transform(
                images, image_preprocessing.get_zoom_matrix(tf.concat([stride, stride], 1), height, width),
                fill_mode='reflect')
        if contrasts is not None:
            mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
            images = (images - mean) * contrasts[:, None, None, None] + mean
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), 'flip': self.flip, 'rotation': self.rotation, 'zoom': self.zoom,
                'contrast': self.contrast, 'seed': self.seed}
