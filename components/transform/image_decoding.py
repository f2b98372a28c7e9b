"""Encoded image bytes to fixed-size RGB pixels: the one decoding path of training and serving.

Transform runs this graph on the training data and the same graph is embedded in the
exported model, so an image is decoded, composited, converted and resized identically in
both places:

1. decode_pixels: the file's own channels (gray, gray+alpha, RGB or RGBA), 8 bits each.
2. to_rgb: transparency is composited onto a background colour (rgb * a + background * (1 - a),
   in float), grayscale becomes 3 equal channels. Opaque images come out exactly as decoded.
3. to_square: to size x size by `squash` (ignoring the aspect ratio), `pad` (keeping it, with
   bands of the background colour) or `crop` (the centre square), resized with antialiasing.

What TensorFlow itself cannot show, ingestion (components/example_gen/ingestion/inspection.py)
converts once, keeping the alpha channel: formats it cannot decode, and transparency its
decoders ignore (GIF transparency, which it paints black; a gray or RGB PNG's single
transparent colour).
"""
import re
from typing import Sequence

import tensorflow as tf

# How to_square may make an image square (PreprocessingSpec.resize names the same three).
RESIZE_MODES = ('squash', 'pad', 'crop')


def decode_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """One encoded image (JPEG, PNG, GIF first frame, BMP) -> uint8 [height, width, channels].

    channels as stored: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA (palette PNGs with transparency
    give 4; JPEG and GIF never have alpha). Ingestion calls this on every image it ingests,
    so nothing reaches Transform that this graph cannot decode; the steps after it are
    arithmetic that works on any of the four.
    """
    return tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8)


def to_rgb(pixels: tf.Tensor, background: Sequence[float], use_alpha=True) -> tf.Tensor:
    """uint8 [h, w, 1|2|3|4] -> float32 [h, w, 3] in [0, 255], alpha composited onto background.

    `use_alpha` False ignores a fourth (or second) channel. The channel count is only known
    when the graph runs, so both cases are graph branches (tf.cond), not Python ones.
    """
    image = tf.cast(pixels, tf.float32)
    channels = tf.shape(image)[-1]
    colour = tf.cond(channels >= 3, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    has_alpha = tf.logical_and(tf.equal(channels % 2, 0), use_alpha)
    alpha = tf.cond(has_alpha, lambda: image[..., -1:] / 255.0, lambda: tf.ones_like(image[..., :1]))
    background = tf.constant(background, tf.float32, shape=[3])
    rgb = colour * alpha + background * (1.0 - alpha)  # alpha 1: exactly the colour
    rgb.set_shape([None, None, 3])
    return rgb


def decode_rgb(encoded: tf.Tensor, background: Sequence[float]) -> tf.Tensor:
    """One encoded image -> float32 [height, width, 3] in [0, 255], composited onto background.

    A BMP's fourth byte is not alpha: in ordinary 32-bit BMPs it is unused and often 0 (which
    would turn them into plain background), and Pillow and most viewers ignore it too.
    """
    is_bmp = tf.equal(tf.strings.substr(encoded, 0, 2), b'BM')
    return to_rgb(decode_pixels(encoded), background, use_alpha=tf.logical_not(is_bmp))


def to_square(image: tf.Tensor, image_size: int, resize: str, background: Sequence[float]) -> tf.Tensor:
    """float32 [h, w, 3] -> float32 [size, size, 3] in [0, 255], resized with antialiasing.

    squash: the whole image, stretched to a square (as Keras' image_dataset_from_directory
    does). pad: the whole image, its aspect ratio kept (sides rounded to whole pixels),
    centred between bands of the background colour. crop: the centre square of side
    min(h, w), the rest cut off. Antialiasing keeps large photos from aliasing when they are
    shrunk.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f'resize must be one of {", ".join(RESIZE_MODES)}, not {resize!r}')
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if resize == 'crop':
        side = tf.minimum(height, width)
        image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    if resize != 'pad':
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0)
    side = tf.maximum(height, width)
    # The longer side becomes image_size, the shorter one in proportion (rounded half up, at least 1).
    inner_height = tf.maximum(1, (2 * height * image_size + side) // (2 * side))
    inner_width = tf.maximum(1, (2 * width * image_size + side) // (2 * side))
    image = tf.clip_by_value(tf.image.resize(image, [inner_height, inner_width], antialias=True), 0.0, 255.0)
    # pad_to_bounding_box pads with 0: shift the background to 0 and back.
    background = tf.constant(background, tf.float32, shape=[3])
    image = tf.image.pad_to_bounding_box(image - background, (image_size - inner_height) // 2,
                                         (image_size - inner_width) // 2, image_size, image_size) + background
    image.set_shape([image_size, image_size, 3])
    return image


def decode_image(encoded: tf.Tensor, image_size: int, background: Sequence[float], resize: str) -> tf.Tensor:
    """One encoded image -> float32 [size, size, 3] in [0, 255] (decode_rgb, then to_square)."""
    return to_square(decode_rgb(encoded, background), image_size, resize, background)


def decode_images(encoded: tf.Tensor, image_size: int, background: Sequence[float], resize: str) -> tf.Tensor:
    """A batch of encoded images of any shape [N] or [N, 1] -> float32 [N, size, size, 3]."""
    return tf.map_fn(
        lambda one: decode_image(one, image_size, background, resize),
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
