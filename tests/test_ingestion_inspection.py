"""One file's bytes -> as is, converted, or refused: formats, EXIF orientation, bombs, broken data."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from components.transform.image_decoding import decode_rgb
from components.example_gen.ingestion import skips
from components.example_gen.ingestion.inspection import Ingested, Refused, inspect
from conftest import UPRIGHT_BOTTOM, UPRIGHT_TOP, image_bytes, png_header_only, sideways_photo

LIMIT = 100_000_000
COLOUR = (200, 60, 40)


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


@pytest.mark.parametrize('kind', AS_IS)
def test_what_tensorflow_decodes_passes_untouched(kind):
    data = AS_IS[kind]()
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert outcome == Ingested(data)
    assert decode_rgb(data).shape == (20, 24, 3)


CONVERTED = {
    'tiff': (lambda: encode(rgb(), 'TIFF'), 'TIFF RGB -> PNG RGB'),
    'webp': (lambda: encode(rgb(), 'WEBP', lossless=True), 'WEBP RGB -> PNG RGB'),
    'webp with alpha': (lambda: encode(half_transparent(), 'WEBP', lossless=True, exact=True), 'WEBP RGBA -> PNG RGB'),
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
    # Losslessly what Pillow decodes (the first frame, alpha dropped).
    np.testing.assert_array_equal(decode_rgb(outcome.encoded).numpy(),
                                  np.asarray(Image.open(io.BytesIO(data)).convert('RGB')))


def test_sixteen_bit_images_are_scaled_not_clipped():
    outcome = inspect(encode(gray16(40000), 'TIFF'), LIMIT, apply_exif_orientation=True)
    assert outcome.conversion == 'TIFF I;16 -> PNG L'
    assert decode_rgb(outcome.encoded).numpy()[0, 0].tolist() == [155, 155, 155]  # 40000 / 257


def test_exif_orientation_makes_a_sideways_photo_upright():
    data = sideways_photo()
    assert np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))).shape == (30, 20, 3)  # the fixture
    outcome = inspect(data, LIMIT, apply_exif_orientation=True)
    assert outcome.conversion == 'JPEG RGB -> JPEG RGB, EXIF orientation 6 applied'
    upright = decode_rgb(outcome.encoded).numpy().astype(int)
    assert upright.shape == (30, 20, 3)
    np.testing.assert_allclose(upright[:10].mean(axis=(0, 1)), UPRIGHT_TOP, atol=8)
    np.testing.assert_allclose(upright[-10:].mean(axis=(0, 1)), UPRIGHT_BOTTOM, atol=8)


def test_exif_orientation_can_be_left_alone():
    data = sideways_photo()
    assert inspect(data, LIMIT, apply_exif_orientation=False) == Ingested(data)
    assert decode_rgb(data).shape == (20, 30, 3)


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
    assert inspect(data, 24 * 20, apply_exif_orientation=True) == Ingested(data)


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
