"""What TFLiteExport needs: the variants, the accuracy budget, and how images were decoded.

No TensorFlow here: the pipeline's configuration imports it (variants.py says what each is).
"""
from typing import List, Literal

from pydantic import Field, field_validator

from components.transform.spec import ImageOptions

Variant = Literal['float32', 'float16', 'dynamic', 'int8']
VARIANTS = ('float32', 'float16', 'dynamic', 'int8')
DEFAULT_VARIANTS = ('float16', 'int8')


class TFLiteSpec(ImageOptions):
    """`variants` to convert; one that loses more than `max_accuracy_drop` test accuracy against
    the SavedModel (on the same decoded pixels) is reported and not pushed. -1 rejects all."""

    variants: List[Variant] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    max_accuracy_drop: float = Field(0.01, ge=-1, le=1)
    # Training images the int8 variant is calibrated on (plus one black and one white image).
    calibration_images: int = Field(200, ge=1)
    # Test images whose single-image invocation times give the median latency.
    latency_images: int = Field(50, ge=1)

    @field_validator('variants')
    @classmethod
    def _each_once(cls, value: List[str]) -> List[str]:
        return each_variant_once(value)


def each_variant_once(variants: List[str]) -> List[str]:
    """The list as it is, or an error naming a variant listed twice (for the config's `tflite` too)."""
    repeated = sorted({v for v in variants if variants.count(v) > 1})
    if repeated:
        raise ValueError(f'{", ".join(repeated)} listed more than once')
    return variants
