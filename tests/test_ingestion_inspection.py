"""One file's bytes -> as is, converted, or refused: formats, EXIF orientation, bombs, broken data."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from components.transform.image_decoding import decode_pixels, decode_rgb
from components.example_gen.ingestion import skips
from components.example_gen.ingestion.inspection import Ingested, Refused, inspect
from conftest import UPRIGHT_BOTTOM, UPRIGHT_TOP, image_bytes, png_header_only, sideways_photo

LIMIT = 100_000_000
COLOUR = (200, 60, 40)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rgb(size=(24, 20)) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(COLOUR, size=size))).convert('RGB')


def gray16(value: int) -> Image.Image:
    return Image.fromarray(np.full((20, 24), value, np.uint16))


def half_transparent() -> Image.Image:
    image = rgb().convert('RGBA')
    image.putalpha(128)
    return image


AS_IS = {
    'jpeg': lambda: image_bytes(COLOUR, fmt='JPEG'),
    'gif': lambda: image_bytes(COLOUR, fmt='GIF'),
    'bmp': lambda: image_bytes(COLOUR, fmt='BMP'),
    'grayscale png': lambda: image_bytes(COLOUR, mode='L'),
    'rgba png': lambda: image_bytes(COLOUR, mode='RGBA'),
    'cmyk jpeg': lambda: encode(rgb().convert('CMYK'), 'JPEG'),
    '16-bit png': lambda: encode(gray16(40000), 'PNG'),
    'palette png with transparency': lambda: encode(rgb().convert('P'), 'PNG', transparency=0),
}


def _untouched(outcome, data: bytes) -> bool:
    """The file passes as it is (with its facts)."""
    return isinstance(outcome, Ingested) and outcome.encoded == data and outcome.conversion == ''


@pytest.mark.parametrize('kind', AS_IS)
def test_what_tensorflow_decodes_passes_untouched(kind):
    data = AS_IS[kind]()
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert isinstance(outcome, Ingested) and outcome.encoded == data and outcome.conversion == ''
    assert (outcome.facts.height, outcome.facts.width, outcome.facts.file_bytes) == (20, 24, len(data))
    assert decode_rgb(data, WHITE).shape == (20, 24, 3)


CONVERTED = {
    'tiff': (lambda: encode(rgb(), 'TIFF'), 'TIFF RGB -> PNG RGB'),
    'webp': (lambda: encode(rgb(), 'WEBP', lossless=True), 'WEBP RGB -> PNG RGB'),
    'webp with alpha': (lambda: encode(half_transparent(), 'WEBP', lossless=True, exact=True), 'WEBP RGBA -> PNG RGBA'),
    'tiff with opaque alpha': (lambda: encode(rgb().convert('RGBA'), 'TIFF'), 'TIFF RGBA -> PNG RGB'),
    'animated webp': (lambda: encode(rgb(), 'WEBP', lossless=True, save_all=True,
                                     append_images=[rgb().rotate(180)]), 'WEBP RGB -> PNG RGB, first of 2 frames'),
    'avif': (lambda: encode(rgb(), 'AVIF', quality=100), 'AVIF RGB -> PNG RGB'),
}


@pytest.mark.parametrize('kind', CONVERTED)
def test_what_only_pillow_decodes_is_converted_once(kind):
    make, conversion = CONVERTED[kind]
    data = make()
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert isinstance(outcome, Ingested) and outcome.conversion == conversion
    # Losslessly what Pillow decodes (the first frame; alpha kept, unless every pixel is opaque).
    written_mode = conversion.split(',')[0].split()[-1]
    np.testing.assert_array_equal(decode_pixels(outcome.encoded).numpy(),
                                  np.asarray(Image.open(io.BytesIO(data)).convert(written_mode)))


def test_sixteen_bit_images_are_scaled_not_clipped():
    outcome = inspect(encode(gray16(40000), 'TIFF'), LIMIT, apply_exif_orientation=True)
    assert outcome.conversion == 'TIFF I;16 -> PNG L'
    assert decode_rgb(outcome.encoded, WHITE).numpy()[0, 0].tolist() == [155, 155, 155]  # 40000 / 257


def test_exif_orientation_makes_a_sideways_photo_upright():
    data = sideways_photo()
    assert np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))).shape == (30, 20, 3)  # the fixture
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert outcome.conversion == 'JPEG RGB -> JPEG RGB, EXIF orientation 6 applied'
    upright = decode_rgb(outcome.encoded, WHITE).numpy().astype(int)
    assert upright.shape == (30, 20, 3)
    np.testing.assert_allclose(upright[:10].mean(axis=(0, 1)), UPRIGHT_TOP, atol=8)
    np.testing.assert_allclose(upright[-10:].mean(axis=(0, 1)), UPRIGHT_BOTTOM, atol=8)


def test_exif_orientation_can_be_left_alone():
    data = sideways_photo()
    assert _untouched(inspect(data, LIMIT, apply_exif_orientation=False), data)
    assert decode_rgb(data, WHITE).shape == (20, 30, 3)


@pytest.mark.parametrize('width,height,limit,detail', [
    (50_000, 50_000, LIMIT, 'Image size (2500000000 pixels) exceeds limit'),  # Pillow's own hard limit
    (12_000, 12_000, LIMIT, '12000x12000 = 144,000,000 pixels, above max_image_pixels 100,000,000'),
    (400, 300, 100_000, '400x300 = 120,000 pixels, above max_image_pixels 100,000'),
])
def test_bombs_are_refused_from_the_header(width, height, limit, detail):
    # The file has no pixel data: decoding it would fail as corrupt, so this reason proves
    # the decision was taken from the header alone.
    outcome = inspect(png_header_only(width, height), limit, apply_exif_orientation=True)
    assert outcome.reason == skips.TOO_MANY_PIXELS
    assert detail in outcome.detail


def test_the_pixel_limit_is_inclusive():
    data = image_bytes(COLOUR, size=(24, 20))
    assert _untouched(inspect(data, 24 * 20, apply_exif_orientation=True), data)


@pytest.mark.parametrize('data,reason', [
    (b'', skips.EMPTY_FILE),
    (b'just some text, saved as .jpg', skips.NOT_AN_IMAGE),
    (image_bytes(COLOUR, size=(200, 200))[:400], skips.CORRUPT_IMAGE),  # truncated PNG
    (image_bytes(COLOUR, size=(200, 200), fmt='JPEG')[:1500], skips.CORRUPT_IMAGE),  # truncated JPEG
    (encode(rgb((200, 200)), 'TIFF')[:3000], skips.CORRUPT_IMAGE),  # truncated TIFF
    (png_header_only(10, 10), skips.CORRUPT_IMAGE),
])
def test_broken_files_are_refused_with_their_reason(data, reason):
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert isinstance(outcome, Refused) and outcome.reason == reason, outcome


# --- Transparency: kept as alpha for Transform to composite, never flattened here ----------------

HIDDEN = (255, 0, 0)  # what lies under fully transparent pixels: must never be seen
BLUE = (0, 0, 255)


def transparent_rgba() -> Image.Image:
    """24x20: the left half fully transparent over pure red, the right half blue at alpha 128."""
    pixels = np.zeros((20, 24, 4), np.uint8)
    pixels[:, :12] = HIDDEN + (0,)
    pixels[:, 12:] = BLUE + (128,)
    return Image.fromarray(pixels, 'RGBA')


def test_transparent_webp_keeps_its_alpha_and_the_decode_composites_it():
    data = encode(transparent_rgba(), 'WEBP', lossless=True, exact=True)  # exact: keep the hidden red
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert outcome.conversion == 'WEBP RGBA -> PNG RGBA'
    written = Image.open(io.BytesIO(outcome.encoded))
    assert written.format == 'PNG' and written.mode == 'RGBA'
    np.testing.assert_array_equal(np.asarray(written), np.asarray(transparent_rgba()))  # alpha and all
    a = 128 / 255
    for background in (WHITE, (0, 0, 0), (10, 200, 30)):
        decoded = decode_rgb(outcome.encoded, background).numpy()
        np.testing.assert_array_equal(decoded[:, :12], np.broadcast_to(background, (20, 12, 3)))
        np.testing.assert_allclose(decoded[:, 12:], np.broadcast_to(np.multiply(BLUE, a) + np.multiply(background, 1 - a),
                                                                   (20, 12, 3)), atol=1e-4)


def transparent_gif(transparent_index=0) -> bytes:
    """24x20 palette GIF: the left half palette index 0 (red), the right half index 1 (blue)."""
    indices = np.zeros((20, 24), np.uint8)
    indices[:, 12:] = 1
    image = Image.fromarray(indices, 'P')
    image.putpalette(HIDDEN + BLUE + (0, 255, 0))
    return encode(image, 'GIF', transparency=transparent_index, optimize=False)  # keep unused colours


def test_transparent_gif_is_converted_because_tensorflow_paints_it_black():
    data = transparent_gif()
    raw = decode_pixels(data).numpy()  # TensorFlow's own GIF decoder: 3 channels, transparent = black
    assert raw.shape == (20, 24, 3) and raw[0, 0].tolist() == [0, 0, 0] and raw[0, -1].tolist() == list(BLUE)
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert outcome.conversion == 'GIF P -> PNG RGBA, transparency TensorFlow ignores kept as alpha'
    decoded = decode_rgb(outcome.encoded, WHITE).numpy()
    np.testing.assert_array_equal(decoded[:, :12], 255.0)
    np.testing.assert_array_equal(decoded[:, 12:], np.broadcast_to(BLUE, (20, 12, 3)))


def test_gif_whose_transparent_colour_no_pixel_uses_passes_untouched():
    data = transparent_gif(transparent_index=2)
    assert Image.open(io.BytesIO(data)).info.get('transparency') == 2
    assert _untouched(inspect(data, LIMIT, apply_exif_orientation=True), data)


@pytest.mark.parametrize('mode,left,right,transparent,written,right_rgb', [
    ('L', 76, 200, 76, 'LA', [200] * 3),
    ('RGB', HIDDEN, BLUE, HIDDEN, 'RGBA', list(BLUE)),
    ('I;16', 40000, 10000, 40000, 'LA', [10000 // 257] * 3),
])
def test_png_transparent_colour_becomes_alpha(mode, left, right, transparent, written, right_rgb):
    channels = (3,) if mode == 'RGB' else ()
    pixels = np.zeros((20, 24) + channels, np.uint16 if mode == 'I;16' else np.uint8)
    pixels[:, :12], pixels[:, 12:] = left, right
    image = Image.fromarray(pixels)
    assert image.mode == mode
    data = encode(image, 'PNG', transparency=transparent)
    assert decode_pixels(data).shape[-1] in (1, 3)  # TensorFlow decodes it, transparency ignored
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert outcome.conversion.startswith(f'PNG {mode} -> PNG {written}, transparency TensorFlow ignores')
    decoded = decode_rgb(outcome.encoded, WHITE).numpy()
    np.testing.assert_array_equal(decoded[:, :12], 255.0)
    np.testing.assert_array_equal(decoded[:, 12:], np.broadcast_to(right_rgb, (20, 12, 3)))
