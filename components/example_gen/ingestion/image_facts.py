"""What an ingested image looks like, as numbers StatisticsGen can summarise.

The encoded bytes tell TFDV nothing (tensorflow/tfx#1622). These do: the size, the channels
Transform decodes (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA), the source format, the file's size,
and, from a strided sample of at most SAMPLE_SIDE x SAMPLE_SIDE pixels, the mean brightness and
saturation of what is visible (weighted by alpha). A class that became grayscale thumbnails
shows up as a change of image_width, image_height, image_channels and image_saturation.
They are computed from pixels the ingestion decodes anyway, so they cost no extra decode.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SAMPLE_SIDE = 64
# ITU-R BT.601 luma, the weights of Pillow's and TensorFlow's RGB -> gray conversions.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class ImageFacts:
    height: int
    width: int
    channels: int
    source_format: str  # Pillow's name of the file's format: JPEG, PNG, GIF, BMP, WEBP, TIFF, ...
    file_bytes: int     # size of the file as found, before any conversion
    brightness: float   # mean luma of the visible pixels, 0 (black) to 255 (white)
    saturation: float   # mean HSV saturation of the visible pixels, 0 (gray) to 1


def describe(pixels: np.ndarray, source_format: str, file_bytes: int, alpha_is_transparency: bool = True
             ) -> ImageFacts:
    """Facts of uint8 pixels [height, width(, channels)] as Transform decodes them.

    alpha_is_transparency: False for BMP, whose fourth channel Transform ignores (so does this).
    A fully transparent image has brightness and saturation 0.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    height, width, channels = pixels.shape
    sample = pixels[::max(1, height // SAMPLE_SIDE), ::max(1, width // SAMPLE_SIDE)]
    sample = sample.reshape(-1, channels).astype(np.float32)
    colour = sample[:, :3] if channels >= 3 else np.repeat(sample[:, :1], 3, axis=1)
    has_alpha = channels in (2, 4) and alpha_is_transparency
    weight = sample[:, -1] / 255.0 if has_alpha else np.ones(len(sample), dtype=np.float32)
    total = float(weight.sum())
    if total == 0.0:
        brightness = saturation = 0.0
    else:
        high, low = colour.max(axis=1), colour.min(axis=1)
        per_pixel_saturation = np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0)
        brightness = float((colour @ _LUMA * weight).sum() / total)
        saturation = float((per_pixel_saturation * weight).sum() / total)
    return ImageFacts(height=int(height), width=int(width), channels=int(channels),
                      source_format=source_format or 'UNKNOWN', file_bytes=int(file_bytes),
                      brightness=round(brightness, 3), saturation=round(saturation, 4))
