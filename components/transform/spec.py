"""What Transform receives: one input tensor per backbone (an ensemble decodes each size once),
and how every image becomes a square RGB picture (components/transform/image_decoding.py)."""
import re
from typing import Any, List, Literal, Tuple

from pydantic import field_validator

from components.strict_spec import StrictSpec
from components.trainer.spec import BackboneName

# How an image that is not square becomes square (image_decoding.RESIZE_MODES names the same):
# squash stretches it, pad keeps the aspect ratio with bands of the background, crop keeps the
# centre square. The default, in one place:
ResizeMode = Literal['squash', 'pad', 'crop']
DEFAULT_RESIZE: ResizeMode = 'squash'
# The colour under transparent pixels (and pad's bands).
DEFAULT_BACKGROUND = 'white'
NAMED_BACKGROUNDS = {'white': (255, 255, 255), 'black': (0, 0, 0)}
_HEX_COLOUR = re.compile(r'#([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})')


def parse_background(value: Any) -> Tuple[int, int, int]:
    """white, black, '#RRGGBB' or [R, G, B] (0 to 255 each) -> (R, G, B)."""
    if isinstance(value, str):
        if value.strip().lower() in NAMED_BACKGROUNDS:
            return NAMED_BACKGROUNDS[value.strip().lower()]
        match = _HEX_COLOUR.fullmatch(value.strip())
        if match:
            return tuple(int(part, 16) for part in match.groups())
    elif isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(part, int) and not isinstance(part, bool) and 0 <= part <= 255 for part in value):
        return tuple(value)
    hint = " (in YAML, quote '#RRGGBB': a bare # starts a comment)" if value is None else ''
    raise ValueError(f"{value!r} is not a colour: use white, black, '#RRGGBB' or [R, G, B] with values "
                     f"from 0 to 255{hint}")


class ImageOptions(StrictSpec):
    """How every image becomes a square RGB picture, in training and serving alike."""

    background: Tuple[int, int, int] = DEFAULT_BACKGROUND  # validated into (R, G, B)
    resize: ResizeMode = DEFAULT_RESIZE

    @field_validator('background', mode='before')
    @classmethod
    def _colour(cls, value: Any) -> Tuple[int, int, int]:
        return parse_background(value)


class InputSpec(StrictSpec):
    """One tensor Transform emits: the image decoded, resized and scaled for one backbone."""

    key: str
    backbone: BackboneName
    image_size: int


class PreprocessingSpec(ImageOptions):
    """What Transform needs: one input per backbone, and the background and resize mode."""

    inputs: List[InputSpec]
