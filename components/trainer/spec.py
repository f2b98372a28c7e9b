"""What the Trainer receives: the backbones, the head, the two-phase recipe and the devices.

`BackboneSpec` is one backbone fully resolved (an ensemble has one per member); `RecipeSpec` holds
the head and recipe keys and `DevicesSpec` how the Trainer uses its node's devices, both of which
the configuration has at its top level under the same names; `TrainingSpec` is all of them, the
Trainer's custom_config. Validation asks the backbone registry
(backbones.py) for each backbone's facts, imported late: importing this module must not import
TensorFlow (see pipeline.config.configured_output_dir).
"""
from __future__ import annotations

import os
from typing import Any, List, Literal, Optional, Tuple, Union

from pydantic import Field, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator, model_validator

from components.strict_spec import StrictSpec, is_remote

BackboneName = Literal['mobilenet_v2', 'resnet50', 'inception_v3', 'vgg16', 'efficientnet_b0', 'hub']
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Besides these, `weights` may be the path of a Keras weights file.
WEIGHTS_CHOICES = ('imagenet', 'imagenet-torchvision', 'none')
MAX_IMAGE_SIZE = 1024
# A layer index, a fraction of the base's layers (0 < f < 1), or a layer name.
FineTuneAt = Union[StrictInt, StrictFloat, StrictStr]
# Name of the transformed image (and model input) when there is a single backbone.
SINGLE_INPUT_KEY = 'image'


def _registry():
    """The backbone registry, the one place that knows backbones (it imports TensorFlow)."""
    from components.trainer import backbones
    return backbones


class BackboneSpec(StrictSpec):
    """One backbone, fully resolved: what Transform and the Trainer build it from."""

    name: BackboneName
    key: str = SINGLE_INPUT_KEY
    image_size: int = 160
    weights: str = 'imagenet'
    alpha: float = 1.0
    padding: Literal['auto', 'keras', 'torchvision'] = 'auto'
    fine_tune_at: Optional[FineTuneAt] = None
    hub_handle: Optional[str] = None

    @model_validator(mode='after')
    def _consistent(self) -> 'BackboneSpec':
        facts = _registry().get(self.name)
        problems = []
        if not facts.min_size <= self.image_size <= MAX_IMAGE_SIZE:
            problems.append(('image_size', f'must be between {facts.min_size} (the minimum of {self.name}) '
                                           f'and {MAX_IMAGE_SIZE} px, got {self.image_size}'))
        if facts.has_alpha and self.alpha not in MOBILENET_V2_ALPHAS:
            problems.append(('alpha', f'must be one of {list(MOBILENET_V2_ALPHAS)}, got {self.alpha}'))
        if self.name == 'hub':
            if not self.hub_handle:
                problems.append(('hub_handle', 'backbone hub needs hub_handle: a TF-Hub SavedModel folder or handle'))
        else:
            if self.hub_handle:
                problems.append(('hub_handle', f'only applies to backbone hub, not {self.name}'))
            problems.extend(self._weights_problems())
        problems.extend(self._fine_tune_at_problems(facts))
        if problems:
            raise ValueError('; '.join(f'{key}: {message}' for key, message in problems))
        return self

    def _weights_problems(self) -> List[Tuple[str, str]]:
        if self.weights == 'imagenet-torchvision' and (self.name != 'mobilenet_v2' or self.alpha != 1.0):
            return [('weights', f'imagenet-torchvision exists for mobilenet_v2 with alpha 1.0 only, not '
                                f'{self.name}' + (f' with alpha {self.alpha}' if self.name == 'mobilenet_v2' else ''))]
        if self.padding == 'torchvision' and self.weights != 'imagenet-torchvision':
            return [('padding', 'torchvision reproduces torchvision\'s arithmetic and only makes sense with '
                                'weights: imagenet-torchvision')]
        if self.weights not in WEIGHTS_CHOICES and not is_remote(self.weights) and not os.path.isfile(self.weights):
            return [('weights', f'is not one of {", ".join(WEIGHTS_CHOICES)}, so it must be a path to a Keras '
                                f'weights file, but {self.weights!r} does not exist')]
        return []

    def _fine_tune_at_problems(self, facts) -> List[Tuple[str, str]]:
        value = self.fine_tune_at
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return [('fine_tune_at', 'must be a layer index, a fraction or a layer name')] \
                if isinstance(value, bool) else []
        if isinstance(value, float) and not 0 < value < 1:
            return [('fine_tune_at', f'a fraction of the layers must be between 0 and 1, got {value}')]
        if isinstance(value, int) and not 0 <= value < (facts.num_layers or 1):
            return [('fine_tune_at', f'{self.name} has {facts.num_layers} layers, so a layer index must be '
                                     f'0 to {facts.num_layers - 1}; got {value}')]
        return []

    @property
    def torchvision_padding(self) -> bool:
        """auto: pad like the framework the weights were trained in."""
        if self.padding == 'auto':
            return self.weights == 'imagenet-torchvision'
        return self.padding == 'torchvision'

    @property
    def effective_fine_tune_at(self) -> FineTuneAt:
        return _registry().get(self.name).default_fine_tune_at if self.fine_tune_at is None else self.fine_tune_at

    def weights_description(self) -> str:
        return 'the hub module\'s own' if self.name == 'hub' else self.weights


class AugmentationSpec(StrictSpec):
    """Random changes applied in training only; the defaults are the tutorial's."""

    flip: bool = True
    rotation: float = Field(0.2, ge=0, le=0.5, description='fraction of a full turn')
    zoom: float = Field(0.0, ge=0, lt=1)
    contrast: float = Field(0.0, ge=0, lt=1)


def _augmentation_from_switch(value: Any) -> Any:
    """`augmentation: true` means the tutorial's, `false` (or null) none, `auto` the recipe's choice."""
    if value is True:
        return AugmentationSpec()
    if value is False:
        return None
    if not (value == 'auto' or value is None or isinstance(value, (dict, AugmentationSpec))):
        raise ValueError(f'must be auto, true, false or a mapping of flip, rotation, zoom, contrast; got {value!r}')
    if isinstance(value, dict):  # validated here, so that an error names the key, not a union member
        try:
            return AugmentationSpec(**value)
        except ValidationError as error:
            raise ValueError('; '.join(f'{".".join(map(str, e["loc"]))}: {e["msg"]}' for e in error.errors())) from None
    return value


RecipeName = Literal['auto', 'tutorial']


class RecipeSpec(StrictSpec):
    """The head and the two-phase training recipe: the same keys in the config and the spec.

    Keys left unset (None) are the recipe's to choose (components/trainer/recipe.py):
    `tutorial` takes TensorFlow's tutorial's numbers, `auto` chooses the head's on the
    validation split and fine-tunes with early stopping and a schedule. A key that is set is
    used as it is by either recipe.
    """

    recipe: RecipeName = 'auto'
    head: Literal['auto', 'gap', 'max', 'flatten'] = 'auto'
    hidden_units: List[int] = Field(default_factory=list)
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    # L2 penalty on the head's Dense kernels (added to the loss in both phases).
    head_l2: Optional[float] = Field(None, ge=0)
    batch_size: int = Field(32, ge=1)
    head_epochs: Optional[int] = Field(None, ge=0)
    fine_tune_epochs: Optional[int] = Field(None, ge=0)
    learning_rate: Optional[float] = Field(None, gt=0)
    fine_tune_learning_rate: Optional[float] = Field(None, gt=0)
    # Phase 2's learning rate over time: constant, or warm-up then cosine decay to zero at the
    # last of fine_tune_epochs (fine_tune_warmup_epochs of linear warm-up from zero).
    fine_tune_schedule: Optional[Literal['constant', 'cosine']] = None
    fine_tune_warmup_epochs: Optional[int] = Field(None, ge=0)
    head_optimizer: Literal['adam', 'rmsprop', 'sgd'] = 'adam'
    # Phase 2's optimizer (sgd has momentum 0.9): unset, the recipe's (tutorial: rmsprop; auto: sgd).
    fine_tune_optimizer: Optional[Literal['adam', 'rmsprop', 'sgd']] = None
    # auto: the recipe's (tutorial: flip and rotation 0.2; auto: chosen on the validation split).
    augmentation: Union[Literal['auto'], AugmentationSpec, None] = 'auto'
    # Phase 1 on backbone features of the un-augmented training images, computed once (the
    # augmentation then applies to phase 2 only); false: on augmented images, as the tutorial.
    head_on_features: Optional[bool] = None
    # auto: weight each class by n_train / (n_classes * n_class) so rare classes count as much.
    class_weight: Literal['none', 'auto'] = 'none'
    # Stop a phase when validation loss has not improved for this many epochs, keeping the best
    # weights (in phase 2 the head-only model counts as a candidate too).
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    # What "better" means for early stopping and for the weights it keeps: validation loss, or
    # validation accuracy (ties broken by the loss). Unset: the recipe's (tutorial: val_loss;
    # auto: val_accuracy).
    early_stopping_metric: Optional[Literal['val_loss', 'val_accuracy']] = None
    seed: int = 42
    # Same seed, same data, same code: identical metrics on rerun (slower on some ops).
    deterministic: bool = False
    # Keep decoded, resized images after the first epoch instead of decoding every epoch:
    # auto: in memory when they fit in input_cache_max_gb, else in a file; or memory, disk, none.
    input_cache: Literal['auto', 'memory', 'disk', 'none'] = 'auto'
    input_cache_max_gb: float = Field(4.0, gt=0)
    # In phase 1 the frozen backbone gives an image the same features every epoch: compute
    # them once. Validation images are never augmented, so their features always are; without
    # augmentation the training images' are too and the head trains on them alone; and with
    # none in phase 2, phase 2 runs above the backbones' frozen bottoms (frozen_bottom.py).
    cache_features: bool = True

    _augmentation_switch = field_validator('augmentation', mode='before')(_augmentation_from_switch)

    @field_validator('hidden_units')
    @classmethod
    def _positive_units(cls, value: List[int]) -> List[int]:
        if any(units < 1 for units in value):
            raise ValueError(f'every hidden layer needs at least one unit, got {value}')
        return value

    @model_validator(mode='after')
    def _something_to_train(self) -> 'RecipeSpec':
        if self.head_epochs == 0 and self.fine_tune_epochs == 0:
            raise ValueError('head_epochs and fine_tune_epochs are both 0: nothing would be trained')
        return self

    @property
    def effective_fine_tune_learning_rate(self) -> float:
        """Set, or the tutorial's rule: a tenth of the head's learning rate."""
        return self.fine_tune_learning_rate or self.learning_rate / 10

    def is_unset(self, key: str) -> bool:
        """Whether the recipe is to choose `key` (None, or `auto` for augmentation)."""
        value = getattr(self, key)
        return value == 'auto' if key == 'augmentation' else value is None


def _precision_from_yaml(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` as false: it means `off` here."""
    return 'off' if value is False else value


class DevicesSpec(StrictSpec):
    """How the Trainer uses the devices of its node (components/trainer/devices.py decides).

    `batch_size` is the global batch whatever the number of replicas, so the learning rates
    apply unchanged: one GPU or four train the same steps, each replica on its share.
    """

    # auto: MirroredStrategy over every visible GPU when there are two or more, else TensorFlow's
    # default (one device); mirrored: MirroredStrategy over every GPU, or every logical CPU
    # device when there is no GPU (one replica on an ordinary machine); none: the default.
    distribution: Literal['auto', 'mirrored', 'none'] = 'auto'
    # auto: mixed float16 when every GPU has compute capability 7.0 or more (and no backbone is
    # randomly initialised), float32 otherwise; float16 / bfloat16: that mixed policy anywhere;
    # off: float32. The output layer always computes in float32.
    mixed_precision: Literal['auto', 'float16', 'bfloat16', 'off'] = 'auto'
    # Compile the training steps with XLA (model.compile(jit_compile=True)).
    jit_compile: bool = False

    _precision_switch = field_validator('mixed_precision', mode='before')(_precision_from_yaml)


# The keys a recipe chooses when the config leaves them unset.
RECIPE_CHOICES = ('learning_rate', 'dropout', 'head_l2', 'head_epochs', 'augmentation', 'fine_tune_epochs',
                  'fine_tune_optimizer', 'fine_tune_learning_rate', 'fine_tune_schedule', 'fine_tune_warmup_epochs',
                  'head_on_features', 'early_stopping_patience', 'early_stopping_metric')


class TrainingSpec(RecipeSpec, DevicesSpec):
    """What the Trainer needs: the backbones, the head, the two-phase recipe and the devices."""

    backbones: List[BackboneSpec]

    @property
    def any_random_backbone(self) -> bool:
        return any(b.weights == 'none' for b in self.backbones if b.name != 'hub')
