"""One file's bytes -> ingested as they are, converted once, or refused with a reason.

The rule is what Transform can decode and show as the file means it
(components.transform.image_decoding: JPEG, PNG, GIF first frame, BMP; alpha is composited
there, onto the configured background, so that ingestion does not depend on it):

1. The header is read with Pillow, never the pixels: an image with more than `max_pixels`
   pixels (a decompression bomb) is refused before anything decodes it.
2. If its EXIF orientation says the camera was held sideways (and `apply_exif_orientation`),
   it is converted: TensorFlow ignores EXIF, so the photo would otherwise train lying down.
3. Otherwise, if TensorFlow decodes it, the bytes pass untouched (with TensorFlow 2.16 that
   includes CMYK JPEGs, 16-bit PNGs, and PNGs with alpha or palette transparency, which it
   decodes with their alpha), unless they hold transparency TensorFlow's decoders ignore: a
   transparent GIF (TensorFlow paints those pixels black, with no alpha to composite) or a
   gray or RGB PNG with one transparent colour (tRNS).
4. Otherwise (and for the transparency of 3), if Pillow decodes it (TIFF, WebP, AVIF, JPEGs
   TensorFlow refuses, ...), it is converted once, here, to what Transform reads: JPEG
   (quality 95) when it came from a JPEG, lossless PNG otherwise; 8-bit gray or RGB, with
   alpha (LA, RGBA) when some pixel is not opaque; first frame only.
5. Anything else is refused: not an image, or truncated/corrupt image data.

Every ingested file comes with its facts (ingestion.image_facts: size, channels, format,
brightness, ...), taken from the pixels TensorFlow decodes from the bytes that are written.
"""
from __future__ import annotations

import dataclasses
import io
import warnings
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from components.transform.image_decoding import decode_error_reason, decode_pixels
from components.example_gen.ingestion import skips
from components.example_gen.ingestion.image_facts import ImageFacts, describe

# Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS outright (DecompressionBombError) and
# warns above MAX_IMAGE_PIXELS; max_image_pixels is checked here instead, so the warning is noise.
PILLOW_HARD_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)

_LOSSY_SOURCES = ('JPEG', 'MPO')
_JPEG_QUALITY = 95
_NORMAL_ORIENTATION = 1


@dataclasses.dataclass(frozen=True)
class Ingested:
    encoded: bytes  # what Transform decodes
    facts: ImageFacts  # of the pixels Transform decodes from `encoded`; the source's format and size
    conversion: str = ''  # what was done to the file; '' when it passed as it is


@dataclasses.dataclass(frozen=True)
class Refused:
    reason: str  # a code of components.example_gen.ingestion.skips
    detail: str


def inspect(data: bytes, max_pixels: int, apply_exif_orientation: bool) -> Union[Ingested, Refused]:
    """Decides what becomes of one file's bytes (see the module docstring)."""
    if not data:
        return Refused(skips.EMPTY_FILE, '0 bytes')
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as error:
        return Refused(skips.TOO_MANY_PIXELS, str(error))
    except UnidentifiedImageError:
        return Refused(skips.NOT_AN_IMAGE, 'no image format recognises the content')
    except Exception as error:  # noqa: BLE001  Pillow's parsers raise anything on a mangled header
        return Refused(skips.CORRUPT_IMAGE, f'unreadable header: {error}')
    width, height = image.size
    if width * height > max_pixels:
        return Refused(skips.TOO_MANY_PIXELS,
                       f'{width}x{height} = {width * height:,} pixels, above max_image_pixels {max_pixels:,}')
    orientation = _orientation(image) if apply_exif_orientation else _NORMAL_ORIENTATION
    tensorflow_error = ''
    if orientation == _NORMAL_ORIENTATION:
        pixels, tensorflow_error = _tensorflow_decode(data)
        if pixels is not None:
            untouched = Ingested(data, describe(pixels, image.format, len(data),
                                                alpha_is_transparency=image.format != 'BMP'))
            if not _transparency_tensorflow_ignores(image):
                return untouched
            return _convert(image, orientation, tensorflow_error, len(data), untouched=untouched)
    return _convert(image, orientation, tensorflow_error, len(data))


def _orientation(image: Image.Image) -> int:
    if image.format == 'PNG' and 'exif' not in image.info:
        return _NORMAL_ORIENTATION  # Pillow would decode the whole PNG to look for a late eXIf chunk
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, _NORMAL_ORIENTATION)
    except Exception:  # noqa: BLE001  a mangled EXIF block must not cost the image
        return _NORMAL_ORIENTATION
    return orientation if orientation in range(1, 9) else _NORMAL_ORIENTATION


def _transparency_tensorflow_ignores(image: Image.Image) -> bool:
    """A transparent GIF, or a non-palette PNG with a transparent colour (read from the header)."""
    if 'transparency' not in image.info:
        return False
    return image.format == 'GIF' or (image.format == 'PNG' and image.mode != 'P')


def _tensorflow_decode(data: bytes) -> Tuple[Optional[np.ndarray], str]:
    """(the pixels, '') if Transform's decoder reads the bytes, else (None, its reason)."""
    try:
        return decode_pixels(tf.constant(data)).numpy(), ''
    except tf.errors.OpError as error:
        return None, decode_error_reason(error.message)


def _convert(image: Image.Image, orientation: int, tensorflow_error: str, file_bytes: int,
             untouched: Optional[Ingested] = None) -> Union[Ingested, Refused]:
    """Pillow's pixels as PNG (or JPEG for a JPEG source), 8-bit, alpha kept.

    `untouched`: the file as it is, when TensorFlow decodes it and only transparency it would
    ignore is why it is converted; it passes as it is if no pixel turns out to be transparent.
    """
    source_format, source = image.format, f'{image.format} {image.mode}'
    frames = getattr(image, 'n_frames', 1)
    try:
        image.load()
        if orientation != _NORMAL_ORIENTATION:
            image = ImageOps.exif_transpose(image)
        pixels = _eight_bit(image)
    except Exception as error:  # noqa: BLE001  Pillow's decoders raise many types on broken data
        because = f'TensorFlow: {tensorflow_error}; ' if tensorflow_error else ''
        return Refused(skips.CORRUPT_IMAGE, f'{because}Pillow: {error}')
    if untouched is not None and not pixels.mode.endswith('A'):
        return untouched  # the transparent colour is on no pixel: nothing to keep
    target = 'JPEG' if source_format in _LOSSY_SOURCES and pixels.mode in ('L', 'RGB') else 'PNG'
    buffer = io.BytesIO()
    pixels.save(buffer, format=target, **({'quality': _JPEG_QUALITY} if target == 'JPEG' else {}))
    encoded = buffer.getvalue()
    decoded, still_failing = _tensorflow_decode(encoded)
    if decoded is None:
        return Refused(skips.CORRUPT_IMAGE, f'converted with Pillow, but TensorFlow still fails: {still_failing}')
    steps = [f'EXIF orientation {orientation} applied'] if orientation != _NORMAL_ORIENTATION else []
    if untouched is not None:
        steps.append('transparency TensorFlow ignores kept as alpha')
    if frames > 1:
        steps.append(f'first of {frames} frames')
    return Ingested(encoded, describe(decoded, source_format, file_bytes),
                    f'{source} -> {target} {pixels.mode}' + ''.join(f', {step}' for step in steps))


def _eight_bit(image: Image.Image) -> Image.Image:
    """8-bit L, LA, RGB or RGBA: alpha is kept (Transform composites it onto the background)
    unless every pixel is opaque; palette and single-colour transparency become alpha."""
    if image.mode.startswith('I'):  # 16- or 32-bit integer grayscale: scale, do not clip
        values = np.asarray(image).astype(np.uint32)
        pixels = Image.fromarray((np.minimum(values, 65535) // 257).astype(np.uint8), 'L')
        transparent = image.info.get('transparency')
        if isinstance(transparent, int):  # the 16-bit value that is transparent (tRNS)
            pixels.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), 'L'))
    elif image.mode in ('1', 'L', 'LA', 'La', 'F'):
        pixels = image.convert('LA')
    else:
        pixels = image.convert('RGBA')
    if pixels.mode.endswith('A') and pixels.getchannel('A').getextrema() == (255, 255):
        return pixels.convert(pixels.mode[:-1])  # opaque: L or RGB
    return pixels
