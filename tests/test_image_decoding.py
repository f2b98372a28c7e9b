"""The one decoding path: transparency composited onto the background, squash, pad or crop, in graph too."""
import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.transform.image_decoding import decode_image, decode_images, decode_pixels, decode_rgb
from conftest import image_bytes

WHITE, BLACK, TEAL = (255, 255, 255), (0, 0, 0), (10, 120, 230)
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)


def encode(image: Image.Image, fmt='PNG', **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def three_zones_rgba() -> np.ndarray:
    """20 rows x 24 columns: alpha 0 over pure red | blue at alpha 128 | opaque green."""
    pixels = np.zeros((20, 24, 4), np.uint8)
    pixels[:, :8], pixels[:, 8:16], pixels[:, 16:] = RED + (0,), BLUE + (128,), GREEN + (255,)
    return pixels


def composited(pixels: np.ndarray, background) -> np.ndarray:
    """rgb * a + background * (1 - a), the reference arithmetic in numpy (gray: 3 equal channels)."""
    colour, alpha = pixels[..., :-1].astype(float), pixels[..., -1:] / 255
    return np.broadcast_to(colour, alpha.shape[:2] + (3,)) * alpha + np.asarray(background) * (1 - alpha)


@pytest.mark.parametrize('background', [WHITE, BLACK, TEAL])
def test_rgba_png_is_composited_onto_the_background(background):
    pixels = three_zones_rgba()
    data = encode(Image.fromarray(pixels, 'RGBA'))
    assert decode_pixels(data).shape == (20, 24, 4)
    decoded = decode_rgb(data, background).numpy()
    np.testing.assert_array_equal(decoded[:, :8], np.broadcast_to(background, (20, 8, 3)))  # no hidden red
    np.testing.assert_allclose(decoded, composited(pixels, background), atol=1e-4)
    half = 128 / 255
    np.testing.assert_allclose(decoded[0, 8], np.multiply(BLUE, half) + np.multiply(background, 1 - half), atol=1e-4)
    np.testing.assert_array_equal(decoded[:, 16:], np.broadcast_to(GREEN, (20, 8, 3)))


def test_gray_with_alpha_is_composited_into_three_equal_channels():
    pixels = np.zeros((20, 24, 2), np.uint8)
    pixels[:, :8], pixels[:, 8:16], pixels[:, 16:] = (76, 0), (200, 128), (30, 255)
    data = encode(Image.fromarray(pixels, 'LA'))
    assert decode_pixels(data).shape == (20, 24, 2)
    decoded = decode_rgb(data, TEAL).numpy()
    np.testing.assert_array_equal(decoded[:, :8], np.broadcast_to(TEAL, (20, 8, 3)))
    np.testing.assert_allclose(decoded, composited(pixels, TEAL), atol=1e-4)
    np.testing.assert_array_equal(decoded[:, 16:], 30.0)


def test_palette_transparency_is_composited():
    indices = np.zeros((20, 24), np.uint8)
    indices[:, 8:16], indices[:, 16:] = 1, 2
    image = Image.fromarray(indices, 'P')
    image.putpalette(RED + BLUE + GREEN)
    data = encode(image, transparency=bytes([0, 128, 255]))  # one alpha per palette entry (tRNS)
    assert decode_pixels(data).shape == (20, 24, 4)
    np.testing.assert_allclose(decode_rgb(data, WHITE).numpy(), composited(three_zones_rgba(), WHITE), atol=1e-4)


OPAQUE = {
    'jpeg': lambda: image_bytes(RED, fmt='JPEG'),
    'gray jpeg': lambda: image_bytes(RED, fmt='JPEG', mode='L'),
    'cmyk jpeg': lambda: image_bytes(RED, fmt='JPEG', mode='CMYK'),
    'png': lambda: image_bytes(RED),
    'gray png': lambda: image_bytes(RED, mode='L'),
    'opaque rgba png': lambda: image_bytes(RED, mode='RGBA'),
    '16-bit png': lambda: encode(Image.fromarray(np.arange(480, dtype=np.uint16).reshape(20, 24) * 100)),
    'gif': lambda: image_bytes(RED, fmt='GIF'),
    'bmp': lambda: image_bytes(RED, fmt='BMP'),
}


@pytest.mark.parametrize('kind', OPAQUE)
def test_opaque_images_decode_exactly_as_before(kind):
    """The old decode was tf.io.decode_image(channels=3), then the same antialiased resize."""
    data = OPAQUE[kind]()
    before = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    for background in (WHITE, BLACK):
        np.testing.assert_array_equal(decode_rgb(data, background).numpy(), before.numpy().astype(np.float32))
        resized = tf.clip_by_value(tf.image.resize(before, [16, 16], antialias=True), 0, 255)
        np.testing.assert_array_equal(decode_image(data, 16, background, 'squash').numpy(), resized.numpy())


def bmp_32_bit(width=3, height=2, bgrx=(10, 20, 30, 0)) -> bytes:
    """An ordinary 32-bit BI_RGB BMP, its fourth byte 0 (unused padding, as many writers leave it)."""
    pixels = bytes(bgrx) * (width * height)
    return (struct.pack('<2sIHHI', b'BM', 54 + len(pixels), 0, 0, 54) +
            struct.pack('<IiiHHIIiiII', 40, width, height, 1, 32, 0, len(pixels), 2835, 2835, 0, 0) + pixels)


def test_a_bmps_fourth_byte_is_not_alpha():
    data = bmp_32_bit()
    assert decode_pixels(data).numpy()[0, 0].tolist() == [30, 20, 10, 0]  # TensorFlow calls it alpha
    np.testing.assert_array_equal(decode_rgb(data, WHITE).numpy(), np.broadcast_to([30, 20, 10], (2, 3, 3)))


def test_inside_a_graph_images_with_any_channel_count_share_a_batch():
    """Transform traces decode_images into a graph (tf.map_fn): channel counts are only known at run time."""
    batch = [encode(Image.fromarray(three_zones_rgba(), 'RGBA')), image_bytes(RED, fmt='JPEG', mode='L'),
             encode(Image.fromarray(three_zones_rgba(), 'RGBA').convert('LA')), image_bytes(BLUE),
             bmp_32_bit()]
    graph = tf.function(lambda encoded: decode_images(encoded, 12, TEAL, 'pad'),
                        input_signature=[tf.TensorSpec([None, 1], tf.string)])
    decoded = graph(tf.constant([[data] for data in batch])).numpy()
    assert decoded.shape == (5, 12, 12, 3)
    for one, data in zip(decoded, batch, strict=True):
        np.testing.assert_allclose(one, decode_image(data, 12, TEAL, 'pad').numpy(), atol=1e-4)
    np.testing.assert_allclose(decoded[0, 6, 0], TEAL, atol=1e-4)  # the transparent zone, in the graph too


# --- Making it square: a 40x20 image, green | red | blue (10, 10 and 20 columns) ----------------

SIZE = 20


def zones_40x20() -> bytes:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10], pixels[:, 10:20], pixels[:, 20:] = GREEN, RED, BLUE
    return encode(Image.fromarray(pixels))


def test_squash_stretches_the_whole_image_into_the_square():
    image = decode_image(zones_40x20(), SIZE, WHITE, 'squash').numpy()
    assert image.shape == (SIZE, SIZE, 3)
    for row in (0, 10, 19):  # no bands: the image fills every row
        np.testing.assert_allclose(image[row, 2], GREEN, atol=1)
        np.testing.assert_allclose(image[row, 7], RED, atol=1)
        np.testing.assert_allclose(image[row, 15], BLUE, atol=1)


@pytest.mark.parametrize('background', [WHITE, BLACK, TEAL])
def test_pad_keeps_the_aspect_ratio_between_bands_of_the_background(background):
    image = decode_image(zones_40x20(), SIZE, background, 'pad').numpy()
    assert image.shape == (SIZE, SIZE, 3)
    # 40x20 -> 20x10, centred: rows 0-4 and 15-19 are background, exactly.
    np.testing.assert_array_equal(image[:5], np.broadcast_to(background, (5, SIZE, 3)))
    np.testing.assert_array_equal(image[15:], np.broadcast_to(background, (5, SIZE, 3)))
    for row in (5, 10, 14):
        np.testing.assert_allclose(image[row, 2], GREEN, atol=1)
        np.testing.assert_allclose(image[row, 7], RED, atol=1)
        np.testing.assert_allclose(image[row, 15], BLUE, atol=1)


def test_pad_bands_of_a_tall_image_are_left_and_right():
    tall = encode(Image.fromarray(np.full((40, 20, 3), RED, np.uint8)))
    image = decode_image(tall, SIZE, TEAL, 'pad').numpy()
    np.testing.assert_array_equal(image[:, :5], np.broadcast_to(TEAL, (SIZE, 5, 3)))
    np.testing.assert_array_equal(image[:, 15:], np.broadcast_to(TEAL, (SIZE, 5, 3)))
    np.testing.assert_allclose(image[:, 5:15], np.broadcast_to(RED, (SIZE, 10, 3)), atol=1e-3)


def test_crop_keeps_the_centre_square():
    image = decode_image(zones_40x20(), SIZE, WHITE, 'crop').numpy()
    assert image.shape == (SIZE, SIZE, 3)
    # Columns 10-29 of the original: red then blue, 1:1; the green left end is cut off.
    np.testing.assert_allclose(image[:, :9], np.broadcast_to(RED, (SIZE, 9, 3)), atol=1e-3)
    np.testing.assert_allclose(image[:, 11:], np.broadcast_to(BLUE, (SIZE, 9, 3)), atol=1e-3)
    assert image[..., 1].max() < 1e-3


def test_pad_and_transparency_share_the_background():
    pixels = np.zeros((20, 40, 4), np.uint8)
    pixels[:, :20] = RED + (0,)  # the left half transparent
    pixels[:, 20:] = BLUE + (255,)
    image = decode_image(encode(Image.fromarray(pixels, 'RGBA')), SIZE, TEAL, 'pad').numpy()
    np.testing.assert_allclose(image[:5], np.broadcast_to(TEAL, (5, SIZE, 3)), atol=1e-3)
    np.testing.assert_allclose(image[5:15, :9], np.broadcast_to(TEAL, (10, 9, 3)), atol=1e-3)
    np.testing.assert_allclose(image[5:15, 11:], np.broadcast_to(BLUE, (10, 9, 3)), atol=1e-3)


def test_an_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="resize must be one of squash, pad, crop, not 'stretch'"):
        decode_image(zones_40x20(), SIZE, WHITE, 'stretch')
