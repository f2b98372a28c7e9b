"""What Transform receives: one input tensor per backbone (an ensemble decodes each size once)."""
from typing import List

from components.strict_spec import StrictSpec
from components.trainer.spec import BackboneName


class InputSpec(StrictSpec):
    """One tensor Transform emits: the image decoded, resized and scaled for one backbone."""

    key: str
    backbone: BackboneName
    image_size: int


class PreprocessingSpec(StrictSpec):
    """What Transform needs: one input per backbone."""

    inputs: List[InputSpec]
