"""What DataValidator needs from the config. No TensorFlow here (the config imports it)."""
from typing import Literal

from pydantic import Field

from components.strict_spec import StrictSpec

Mode = Literal['block', 'warn', 'off']


class DriftThresholds(StrictSpec):
    """How far this run's data may move from the previous successful run's, per split.

    class_balance: L-infinity distance between the shares of the classes (0.1: no class's share
    moved by more than 10 points). image_kind: the same for the shares of image_channels (gray,
    RGB, RGBA, ...) and of image_format. image_size and image_colour: Jensen-Shannon divergence
    (0 to 1) of the histograms of image_height, image_width and image_file_bytes, and of
    image_brightness and image_saturation. image_* for the whole split and, in the training
    split, for each class.
    min_images: no drift is measured from fewer images than this (in either run), since the
    histograms of a handful of images differ by chance; bench/results/data_drift.md measures it.
    """

    # Defaults from bench/results/data_drift.md: two random halves of the same real image set
    # differ by up to 0.08 in L-infinity and 0.16 in Jensen-Shannon divergence (0.12 for a whole
    # split), while a class turned into grayscale thumbnails moves its histograms by 0.68 to 1.
    class_balance: float = Field(0.1, gt=0, le=1)
    image_kind: float = Field(0.1, gt=0, le=1)
    image_size: float = Field(0.5, gt=0, le=1)
    image_colour: float = Field(0.5, gt=0, le=1)
    # Drift is measured only where both runs have at least this many images (in the split, or
    # in the class): the histograms of a handful of images differ by chance.
    min_images: int = Field(30, ge=1)


class DataValidationSpec(StrictSpec):
    mode: Mode = 'block'
    drift: DriftThresholds = DriftThresholds()
