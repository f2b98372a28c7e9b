"""What ImageExampleGen receives: how files are read, which layout, and the split sizes."""
from typing import Literal

from pydantic import Field

from components.strict_spec import StrictSpec

# Pillow refuses images with more pixels outright (2 * PIL.Image.MAX_IMAGE_PIXELS), so a larger
# max_image_pixels could not be honoured. (ingestion.inspection has the same figure from Pillow;
# a test keeps the two equal without importing Pillow here.)
PILLOW_HARD_PIXEL_LIMIT = 178_956_970


class SplitRatios(StrictSpec):
    """Relative sizes of the hash-based splits; 80/10/10 means 8 of 10 hash buckets go to train."""

    train: int = Field(80, ge=1)
    eval: int = Field(10, ge=1)
    test: int = Field(10, ge=1)


class ImageReadingConfig(StrictSpec):
    """How ImageExampleGen's executor treats each file (its custom_config)."""

    apply_exif_orientation: bool = True
    max_image_pixels: int = Field(100_000_000, ge=1, le=PILLOW_HARD_PIXEL_LIMIT)
    drop_unusable_classes: bool = False


class IngestionConfig(ImageReadingConfig):
    """What ImageExampleGen needs besides data_root: which layout, and split sizes if it computes them."""

    layout: Literal['auto', 'class_folders', 'pre_split'] = 'auto'
    split_ratios: SplitRatios = SplitRatios()
