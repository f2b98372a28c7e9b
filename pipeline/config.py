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

# Components that run in a container of their own on Kubeflow and may be given resources.
# ImageExampleGen is not among them: TFX's Kubeflow v2 compiler builds a FileBasedExampleGen's
# container without looking at its platform config, so resources set for it would be ignored.
KUBEFLOW_RESOURCE_COMPONENTS = ('StatisticsGen', 'ImportSchemaGen', 'Transform', 'Trainer', 'Evaluator', 'Pusher')
# Storage that TFX inside the containers can use: TFX reads and writes artifact URIs itself,
# through TensorFlow's file systems. TensorFlow 2.16 has no S3 file system (so no MinIO either),
# and tensorflow-io 0.37.1's aborts every process that used it at exit (code 134,
# tensorflow/io#2039), which fails the step.
KUBEFLOW_STORAGE_SCHEMES = ('gs://',)


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


class ComponentResources(_Strict):
    """What one component's container may use on Kubeflow, in Kubernetes' units (as kfp's own
    `set_cpu_limit`, `set_memory_limit`, `set_accelerator_type` and `set_accelerator_limit`)."""

    cpu_limit: Optional[str] = Field(None, pattern=r'^([0-9]*[.])?[0-9]+m?$',
                                     description="vCPUs: '4', '0.5' or '500m'.")
    memory_limit: Optional[str] = Field(None, pattern=r'^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$',
                                        description="Bytes with a unit: '16G', '512Mi'.")
    accelerator_type: Optional[str] = Field(
        None, min_length=1, description="'nvidia.com/gpu' on Kubeflow, 'NVIDIA_TESLA_T4' etc. on Vertex AI.")
    accelerator_count: Optional[int] = Field(None, ge=1)

    @field_validator('cpu_limit', 'memory_limit', mode='before')
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """YAML reads `cpu_limit: 4` as a number; Kubernetes quantities are text."""
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode='after')
    def _count_needs_type(self) -> 'ComponentResources':
        if self.accelerator_count is not None and not self.accelerator_type:
            raise ValueError('accelerator_count is set but accelerator_type is not (e.g. nvidia.com/gpu)')
        if self.accelerator_type and self.accelerator_count is None:
            object.__setattr__(self, 'accelerator_count', 1)
        return self


class PipelineConfig(TrainingConfig):
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
    # Kubeflow Pipelines only (python -m kubeflow.runner); local runs ignore them.
    container_image: Optional[str] = None
    component_resources: Dict[str, ComponentResources] = Field(default_factory=dict)

    @field_validator('data_root')
    @classmethod
    def _data_root_exists(cls, value: str) -> str:
        if not _is_remote(value) and not os.path.isdir(value):
            raise ValueError(f'{value!r} is not a folder (expected data_root/<class>/<image files>)')
        return value

    @field_validator('beam_args')
    @classmethod
    def _flags_only(cls, value: List[str]) -> List[str]:
        for arg in value:
            if not arg.startswith('--'):
                raise ValueError(f'{arg!r} is not a Beam flag (flags look like --name=value)')
        return value

    @field_validator('component_resources')
    @classmethod
    def _known_components(cls, value: Dict[str, ComponentResources]) -> Dict[str, ComponentResources]:
        unknown = sorted(set(value) - set(KUBEFLOW_RESOURCE_COMPONENTS))
        if unknown:
            raise ValueError(f'no resources can be set for {", ".join(unknown)}; components that take them: '
                             f'{", ".join(KUBEFLOW_RESOURCE_COMPONENTS)}')
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

    def check_runs_on_kubeflow(self) -> None:
        """Raises a ConfigError naming every key that cannot work in containers on a cluster.

        The containers see nothing of this machine: data, artifacts and pushed models must be on
        storage TFX can use from there, and the weights must come from the image or the internet.
        """
        problems = []
        if not self.container_image:
            problems.append('container_image: required; the image built from the Dockerfile (see README, '
                            '"Run on Kubeflow")')
        for key in ('data_root', 'pipeline_root', 'serving_dir'):
            value = getattr(self, key)
            if not value.startswith(KUBEFLOW_STORAGE_SCHEMES):
                problems.append(f'{key}: {value!r} is not storage TFX can use in the containers; use a '
                                f'{" or ".join(KUBEFLOW_STORAGE_SCHEMES)} URI (why not s3:// or MinIO: README, '
                                f'"Run on Kubeflow")')
        if self.weights not in WEIGHTS_CHOICES:
            problems.append(f'weights: the file {self.weights!r} is on this machine, not in the containers; '
                            f'use imagenet-torchvision (converted into the image) or imagenet (downloaded '
                            f'by the Trainer)')
        if problems:
            raise ConfigError('Configuration cannot run on Kubeflow:\n' + '\n'.join('  ' + p for p in problems))


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
