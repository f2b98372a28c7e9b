"""Encoded image bytes to fixed-size RGB pixels: the one decoding path of training and serving.

Transform runs this graph on the training data and the same graph is embedded in the
exported model, so a JPEG is decoded, converted and resized identically in both places.
"""
import re

import tensorflow as tf


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """One encoded image (JPEG, PNG, GIF first frame, BMP) -> uint8 [height, width, 3].

    Grayscale becomes 3 equal channels and alpha is dropped. ImageExampleGen calls this on
    every image it ingests, so nothing reaches Transform that this graph cannot decode.
    """
    return tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)


def decode_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """One encoded image -> float32 [size, size, 3] in [0, 255] (see decode_rgb).

    The image is resized to a square without keeping its aspect ratio, as Keras'
    image_dataset_from_directory does; antialiasing keeps large photos from aliasing when they
    are shrunk.
    """
    image = decode_rgb(encoded)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_images(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded images of any shape [N] or [N, 1] -> float32 [N, size, size, 3]."""
    return tf.map_fn(
        lambda one: decode_image(one, image_size),
        tf.reshape(encoded, [-1]),
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )


def decode_error_reason(message: str) -> str:
    """The informative sentence of a TensorFlow decoding error, without graph and node noise."""
    message = re.sub(r'\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]', '', message)
    message = re.sub(r'\s+name:\s*$', '', message, flags=re.MULTILINE)  # eager ops' trailer
    noise = ('Graph execution error', 'Detected at node', '<stack traces')
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    return useful[0] if useful else message.strip()
