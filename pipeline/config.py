"""The pipeline's one typed configuration.

A flat YAML file (see `pipeline/config.yaml` for every key, documented) is validated by
`PipelineConfig`. The model is split into nested parts by inheritance, so each TFX
component receives exactly the keys it uses: changing `min_accuracy` must not
invalidate the cached Trainer, changing `learning_rate` must not re-run Transform.

Relative paths in a config file are resolved against the file's own folder; relative
paths given with `--set` are resolved against the current directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PIPELINE_CONFIG_ENV = 'PIPELINE_CONFIG'
DEFAULT_CONFIG_PATH = Path(__file__).with_name('config.yaml')

# Sizes for which Keras publishes ImageNet weights of MobileNetV2 (other sizes load the 224 px ones).
MOBILENET_V2_PRETRAINED_SIZES = (96, 128, 160, 192, 224)
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_MIN_SIZE = 32
# Besides these, `weights` may be the path of a Keras weights file.
WEIGHTS_CHOICES = ('imagenet', 'imagenet-torchvision', 'none')
# Pillow refuses images with more pixels outright (2 * PIL.Image.MAX_IMAGE_PIXELS), so a larger
# max_image_pixels could not be honoured.
PILLOW_HARD_PIXEL_LIMIT = 178_956_970


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config."""


def _is_remote(path: str) -> bool:
    return '://' in path


class _Strict(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True, validate_default=True)


class PreprocessingConfig(_Strict):
    """What Transform needs: how raw image bytes become the backbone's input tensor."""

    backbone: Literal['mobilenet_v2'] = 'mobilenet_v2'
    image_size: int = Field(160, description='Square input size in pixels.')

    @field_validator('image_size')
    @classmethod
    def _image_size_in_range(cls, value: int) -> int:
        if value < MOBILENET_V2_MIN_SIZE:
            raise ValueError(f'must be at least {MOBILENET_V2_MIN_SIZE} px for mobilenet_v2, got {value}')
        if value > 1024:
            raise ValueError(f'{value} px is larger than this pipeline supports (1024)')
        return value


class TrainingConfig(PreprocessingConfig):
    """What the Trainer needs: the model and the two-phase transfer-learning recipe."""

    alpha: float = 1.0
    weights: str = 'imagenet'
    padding: Literal['auto', 'keras', 'torchvision'] = 'auto'
    batch_size: int = Field(32, ge=1)
    head_epochs: int = Field(10, ge=0)
    fine_tune_epochs: int = Field(10, ge=0)
    fine_tune_at: int = Field(100, ge=0)
    learning_rate: float = Field(1e-4, gt=0)
    fine_tune_learning_rate: Optional[float] = Field(None, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    augmentation: bool = True
    seed: int = 42

    @field_validator('alpha')
    @classmethod
    def _known_alpha(cls, value: float) -> float:
        if value not in MOBILENET_V2_ALPHAS:
            raise ValueError(f'must be one of {list(MOBILENET_V2_ALPHAS)}, got {value}')
        return value

    @field_validator('weights')
    @classmethod
    def _weights_kind(cls, value: str) -> str:
        if value in WEIGHTS_CHOICES:
            return value
        if not value:
            raise ValueError(f'must be one of {", ".join(WEIGHTS_CHOICES)} or a path to a Keras weights file')
        if not _is_remote(value) and not os.path.isfile(value):
            raise ValueError(
                f'is not one of {", ".join(WEIGHTS_CHOICES)}, so it must be a path to a Keras weights '
                f'file, but {value!r} does not exist')
        return value

    @model_validator(mode='after')
    def _something_to_train(self) -> 'TrainingConfig':
        if self.head_epochs + self.fine_tune_epochs == 0:
            raise ValueError('head_epochs and fine_tune_epochs are both 0: nothing would be trained')
        return self

    @model_validator(mode='after')
    def _torchvision_weights_fit(self) -> 'TrainingConfig':
        if self.weights == 'imagenet-torchvision' and self.alpha != 1.0:
            raise ValueError(f'weights: imagenet-torchvision exists for alpha 1.0 only, not alpha {self.alpha}')
        if self.padding == 'torchvision' and self.weights != 'imagenet-torchvision':
            raise ValueError('padding: torchvision reproduces torchvision\'s arithmetic and only makes '
                             'sense with weights: imagenet-torchvision')
        return self

    @property
    def torchvision_padding(self) -> bool:
        """auto: pad like the framework the weights were trained in."""
        if self.padding == 'auto':
            return self.weights == 'imagenet-torchvision'
        return self.padding == 'torchvision'

    @property
    def effective_fine_tune_learning_rate(self) -> float:
        """The tutorial fine-tunes at a tenth of the head's learning rate."""
        return self.fine_tune_learning_rate or self.learning_rate / 10


class SplitRatios(_Strict):
    """Relative sizes of the hash-based splits; 80/10/10 means 8 of 10 hash buckets go to train."""

    train: int = Field(80, ge=1)
    eval: int = Field(10, ge=1)
    test: int = Field(10, ge=1)


class ImageReadingConfig(_Strict):
    """How ImageExampleGen's executor treats each file (its custom_config)."""

    apply_exif_orientation: bool = True
    max_image_pixels: int = Field(100_000_000, ge=1, le=PILLOW_HARD_PIXEL_LIMIT)
    drop_unusable_classes: bool = False


class IngestionConfig(ImageReadingConfig):
    """What ImageExampleGen needs besides data_root: which layout, and split sizes if it computes them."""

    layout: Literal['auto', 'class_folders', 'pre_split'] = 'auto'
    split_ratios: SplitRatios = SplitRatios()


class PipelineConfig(TrainingConfig, IngestionConfig):
    """Everything: data, outputs, the gate and how the pipeline runs."""

    pipeline_name: str = Field('image-transfer-learning', pattern=r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
    data_root: str
    output_dir: str
    pipeline_root: Optional[str] = None
    metadata_path: Optional[str] = None
    serving_dir: Optional[str] = None
    cli_home: Optional[str] = None
    split_ratios: SplitRatios = SplitRatios()
    min_accuracy: float = Field(0.5, ge=0)
    max_accuracy_drop: float = Field(0.0, ge=0, le=1)
    beam_args: List[str] = Field(default_factory=lambda: ['--direct_running_mode=in_memory'])
    enable_cache: bool = True

    @field_validator('data_root')
    @classmethod
    def _data_root_exists(cls, value: str) -> str:
        if not _is_remote(value) and not os.path.isdir(value):
            raise ValueError(f'{value!r} is not a folder (expected data_root/<class>/<image files> '
                             f'or data_root/<split>/<class>/<image files>)')
        return value

    @field_validator('beam_args')
    @classmethod
    def _flags_only(cls, value: List[str]) -> List[str]:
        for arg in value:
            if not arg.startswith('--'):
                raise ValueError(f'{arg!r} is not a Beam flag (flags look like --name=value)')
        return value

    @model_validator(mode='after')
    def _fill_output_paths(self) -> 'PipelineConfig':
        """Everything a run writes lives under output_dir unless set separately."""
        defaults = {
            'pipeline_root': os.path.join(self.output_dir, 'pipeline_root'),
            'metadata_path': os.path.join(self.output_dir, 'metadata.sqlite'),
            'serving_dir': os.path.join(self.output_dir, 'serving'),
            'cli_home': os.path.join(self.output_dir, 'tfx_cli'),
        }
        for key, default in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        return self

    def preprocessing(self) -> PreprocessingConfig:
        return _project(self, PreprocessingConfig)

    def training(self) -> TrainingConfig:
        return _project(self, TrainingConfig)

    def ingestion(self) -> IngestionConfig:
        return _project(self, IngestionConfig)


def _project(config: BaseModel, model: type) -> Any:
    return model(**{name: getattr(config, name) for name in model.model_fields})


# Keys whose values are file-system paths and are resolved relative to where they were written.
_PATH_KEYS = ('data_root', 'output_dir', 'pipeline_root', 'metadata_path', 'serving_dir', 'cli_home')


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or _is_remote(value):
        return value
    return str((base / os.path.expanduser(value)).resolve())


def _resolve_paths(raw: Dict[str, Any], base: Path) -> Dict[str, Any]:
    resolved = dict(raw)
    for key in _PATH_KEYS:
        if key in resolved:
            resolved[key] = _resolve_path(resolved[key], base)
    if resolved.get('weights') not in (None,) + WEIGHTS_CHOICES:
        resolved['weights'] = _resolve_path(resolved['weights'], base)
    return resolved


def parse_overrides(overrides: Iterable[str]) -> Dict[str, Any]:
    """Turns `key=value` strings into a dict; values are YAML (`5`, `true`, `[a, b]`).

    Dotted keys set nested values: `split_ratios.train=70`.
    """
    parsed: Dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition('=')
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f'--set {item!r}: expected key=value')
        try:
            value = yaml.safe_load(text) if text.strip() else ''
        except yaml.YAMLError as error:
            raise ConfigError(f'--set {item!r}: value is not valid YAML: {error}') from error
        target = parsed
        *parents, leaf = key.split('.')
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ConfigError(f'--set {item!r}: {parent} is not a section')
        target[leaf] = value
    return parsed


def _merge(base: Dict[str, Any], updates: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f'Invalid configuration ({source}):']
    for problem in error.errors():
        key = '.'.join(str(part) for part in problem['loc']) or '(top level)'
        message = problem['msg']
        if problem['type'] == 'extra_forbidden':
            message = 'unknown key (see pipeline/config.yaml for the keys that exist)'
        elif problem['type'] == 'missing':
            message = 'required key is missing'
        lines.append(f'  {key}: {message.removeprefix("Value error, ")}')
    return '\n'.join(lines)


def config_path_from_env(explicit: Optional[str] = None) -> Path:
    """--config wins, then $PIPELINE_CONFIG (how the `tfx` CLI selects a config), then the default."""
    return Path(explicit or os.environ.get(PIPELINE_CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Optional[os.PathLike] = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Reads, merges and validates a config; every problem is a ConfigError naming its key."""
    config_path = config_path_from_env(str(path) if path else None)
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except FileNotFoundError as error:
        raise ConfigError(f'Config file not found: {config_path}') from error
    except yaml.YAMLError as error:
        raise ConfigError(f'Config file {config_path} is not valid YAML: {error}') from error
    if not isinstance(raw, dict):
        raise ConfigError(f'Config file {config_path} must be a mapping of key: value')
    raw = _resolve_paths(raw, config_path.resolve().parent)
    cli_values = _resolve_paths(parse_overrides(overrides), Path.cwd())
    merged = _merge(raw, cli_values)
    try:
        return PipelineConfig(**merged)
    except ValidationError as error:
        source = str(config_path) + (' with --set ' + ' '.join(overrides) if overrides else '')
        raise ConfigError(_format_validation_error(error, source)) from None
