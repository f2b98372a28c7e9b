"""The pipeline's one typed configuration.

A flat YAML file (see `pipeline/config.yaml` for every key, documented) is validated by
`PipelineConfig`. From it come the specs each TFX component receives, holding exactly the
keys it uses (changing `min_accuracy` must not invalidate the cached Trainer, changing
`learning_rate` must not re-run Transform): `PreprocessingSpec` for Transform and
`TrainingSpec` for the Trainer, with one resolved `BackboneSpec` per backbone (an entry of
`backbones:` takes the top-level key for every field it does not set).

Relative paths in a config file are resolved against the file's own folder; relative
paths given with `--set` are resolved against the current directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictFloat, StrictInt, StrictStr,
                      ValidationError, field_validator, model_validator)

PIPELINE_CONFIG_ENV = 'PIPELINE_CONFIG'
DEFAULT_CONFIG_PATH = Path(__file__).with_name('config.yaml')

BackboneName = Literal['mobilenet_v2', 'resnet50', 'inception_v3', 'vgg16', 'efficientnet_b0', 'hub']
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Besides these, `weights` may be the path of a Keras weights file.
WEIGHTS_CHOICES = ('imagenet', 'imagenet-torchvision', 'none')
MAX_IMAGE_SIZE = 1024
# A layer index, a fraction of the base's layers (0 < f < 1), or a layer name.
FineTuneAt = Union[StrictInt, StrictFloat, StrictStr]
# Name of the transformed image (and model input) when there is a single backbone.
SINGLE_INPUT_KEY = 'image'

# Components that run in a container of their own on Kubeflow and may be given resources.
# ImageExampleGen is not among them: TFX's Kubeflow v2 compiler builds a FileBasedExampleGen's
# container without looking at its platform config, so resources set for it would be ignored.
KUBEFLOW_RESOURCE_COMPONENTS = ('StatisticsGen', 'ImportSchemaGen', 'Transform', 'Trainer', 'Evaluator', 'ModelReport',
                                'Pusher')
# Storage that TFX inside the containers can use: TFX reads and writes artifact URIs itself,
# through TensorFlow's file systems. TensorFlow 2.16 has no S3 file system (so no MinIO either),
# and tensorflow-io 0.37.1's aborts every process that used it at exit (code 134,
# tensorflow/io#2039), which fails the step.
KUBEFLOW_STORAGE_SCHEMES = ('gs://',)
# Pillow refuses images with more pixels outright (2 * PIL.Image.MAX_IMAGE_PIXELS), so a larger
# max_image_pixels could not be honoured.
PILLOW_HARD_PIXEL_LIMIT = 178_956_970


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config."""


def _is_remote(path: str) -> bool:
    return '://' in path


def _registry():
    """The backbone registry (components/backbones.py), the one place that knows backbones."""
    from components import backbones
    return backbones


class _Strict(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True, validate_default=True)


class BackboneSpec(_Strict):
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
        if self.weights not in WEIGHTS_CHOICES and not _is_remote(self.weights) and not os.path.isfile(self.weights):
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


class BackboneEntry(_Strict):
    """An item of `backbones:`; unset fields take the top-level key of the same name."""

    name: BackboneName
    image_size: Optional[int] = None
    weights: Optional[str] = None
    alpha: Optional[float] = None
    padding: Optional[Literal['auto', 'keras', 'torchvision']] = None
    fine_tune_at: Optional[FineTuneAt] = None
    hub_handle: Optional[str] = None


class AugmentationSpec(_Strict):
    """Random changes applied in training only; the defaults are the tutorial's."""

    flip: bool = True
    rotation: float = Field(0.2, ge=0, le=0.5, description='fraction of a full turn')
    zoom: float = Field(0.0, ge=0, lt=1)
    contrast: float = Field(0.0, ge=0, lt=1)


def _augmentation_from_switch(value: Any) -> Any:
    """`augmentation: true` means the defaults, `false` (or null) means none."""
    if value is True:
        return AugmentationSpec()
    if value is False:
        return None
    return value


class InputSpec(_Strict):
    """One tensor Transform emits: the image decoded, resized and scaled for one backbone."""

    key: str
    backbone: BackboneName
    image_size: int


class PreprocessingSpec(_Strict):
    """What Transform needs: one input per backbone."""

    inputs: List[InputSpec]


class _Recipe(_Strict):
    """The head and the two-phase training recipe: the same keys in the config and the spec."""

    head: Literal['auto', 'gap', 'max', 'flatten'] = 'auto'
    hidden_units: List[int] = Field(default_factory=list)
    dropout: float = Field(0.2, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    head_epochs: int = Field(10, ge=0)
    fine_tune_epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-4, gt=0)
    fine_tune_learning_rate: Optional[float] = Field(None, gt=0)
    head_optimizer: Literal['adam', 'rmsprop', 'sgd'] = 'adam'
    fine_tune_optimizer: Literal['adam', 'rmsprop', 'sgd'] = 'rmsprop'
    augmentation: Optional[AugmentationSpec] = AugmentationSpec()
    # auto: weight each class by n_train / (n_classes * n_class) so rare classes count as much.
    class_weight: Literal['none', 'auto'] = 'none'
    # Stop a phase when validation loss has not improved for this many epochs, keeping the best
    # weights; unset: train every epoch, as the tutorial does.
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    seed: int = 42
    # Same seed, same data, same code: identical metrics on rerun (slower on some ops).
    deterministic: bool = False
    # Keep decoded, resized images after the first epoch instead of decoding every epoch:
    # auto: in memory when they fit in input_cache_max_gb, else in a file; or memory, disk, none.
    input_cache: Literal['auto', 'memory', 'disk', 'none'] = 'auto'
    input_cache_max_gb: float = Field(4.0, gt=0)
    # In phase 1 the frozen backbone gives an image the same features every epoch: compute
    # them once. Validation images are never augmented, so their features always are; without
    # augmentation the training images' are too and the head trains on them alone.
    cache_features: bool = True

    _augmentation_switch = field_validator('augmentation', mode='before')(_augmentation_from_switch)

    @field_validator('hidden_units')
    @classmethod
    def _positive_units(cls, value: List[int]) -> List[int]:
        if any(units < 1 for units in value):
            raise ValueError(f'every hidden layer needs at least one unit, got {value}')
        return value

    @model_validator(mode='after')
    def _something_to_train(self) -> '_Recipe':
        if self.head_epochs + self.fine_tune_epochs == 0:
            raise ValueError('head_epochs and fine_tune_epochs are both 0: nothing would be trained')
        return self

    @property
    def effective_fine_tune_learning_rate(self) -> float:
        """The tutorial fine-tunes at a tenth of the head's learning rate."""
        return self.fine_tune_learning_rate or self.learning_rate / 10


class TrainingSpec(_Recipe):
    """What the Trainer needs: the backbones, the head and the two-phase recipe."""

    backbones: List[BackboneSpec]

    @property
    def any_random_backbone(self) -> bool:
        return any(b.weights == 'none' for b in self.backbones if b.name != 'hub')


_BACKBONE_KEYS = ('image_size', 'weights', 'alpha', 'padding', 'fine_tune_at', 'hub_handle')
_RECIPE_KEYS = tuple(_Recipe.model_fields)


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


class ImageReadingConfig(_Strict):
    """How ImageExampleGen's executor treats each file (its custom_config)."""

    apply_exif_orientation: bool = True
    max_image_pixels: int = Field(100_000_000, ge=1, le=PILLOW_HARD_PIXEL_LIMIT)
    drop_unusable_classes: bool = False


class IngestionConfig(ImageReadingConfig):
    """What ImageExampleGen needs besides data_root: which layout, and split sizes if it computes them."""

    layout: Literal['auto', 'class_folders', 'pre_split'] = 'auto'
    split_ratios: SplitRatios = SplitRatios()


class PipelineConfig(_Recipe, IngestionConfig):
    """Everything: data, outputs, the model, the recipe, the gate and how the pipeline runs."""

    pipeline_name: str = Field('image-transfer-learning', pattern=r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
    data_root: str
    output_dir: str
    pipeline_root: Optional[str] = None
    metadata_path: Optional[str] = None
    serving_dir: Optional[str] = None
    cli_home: Optional[str] = None
    # (How folders are read and split: see IngestionConfig.)

    # The model: one backbone, or several side by side (`backbones`), then the head.
    backbone: BackboneName = 'mobilenet_v2'
    backbones: Optional[List[Union[BackboneName, BackboneEntry]]] = None
    image_size: int = 160
    alpha: float = 1.0
    weights: str = 'imagenet'
    padding: Literal['auto', 'keras', 'torchvision'] = 'auto'
    fine_tune_at: Optional[FineTuneAt] = None
    hub_handle: Optional[str] = None
    # (The head and the recipe: see _Recipe.)

    # The gate and the run.
    min_accuracy: float = Field(0.5, ge=0)
    max_accuracy_drop: float = Field(0.0, ge=0, le=1)
    beam_args: List[str] = Field(default_factory=lambda: ['--direct_running_mode=in_memory'])
    enable_cache: bool = True
    # Kubeflow Pipelines only (python -m kubeflow.runner); local runs ignore them.
    container_image: Optional[str] = None
    component_resources: Dict[str, ComponentResources] = Field(default_factory=dict)

    _training: TrainingSpec = PrivateAttr()

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

    @model_validator(mode='after')
    def _resolve_model(self) -> 'PipelineConfig':
        """Builds (and so validates) the per-backbone specs; errors name the key as written."""
        specs = [self._backbone_spec(index, entry) for index, entry in enumerate(self._entries())]
        try:
            self._training = TrainingSpec(backbones=specs, **{k: getattr(self, k) for k in _RECIPE_KEYS})
        except ValidationError as error:
            raise ValueError('; '.join(_messages(error))) from None
        return self

    def _entries(self) -> List[BackboneEntry]:
        if self.backbones is None:
            return [BackboneEntry(name=self.backbone)]
        if not self.backbones:
            raise ValueError('backbones: is empty; list one or more backbones, or remove it and use backbone')
        return [BackboneEntry(name=item) if isinstance(item, str) else item for item in self.backbones]

    def _backbone_spec(self, index: int, entry: BackboneEntry) -> BackboneSpec:
        ensemble = self.backbones is not None and len(self.backbones) > 1
        values = {key: getattr(entry, key) if getattr(entry, key) is not None else getattr(self, key)
                  for key in _BACKBONE_KEYS}
        if entry.name == 'hub':
            values['weights'] = 'imagenet'  # a hub module carries its own weights
        key = f'image_{index}_{entry.name}' if ensemble else SINGLE_INPUT_KEY
        try:
            return BackboneSpec(name=entry.name, key=key, **values)
        except ValidationError as error:
            where = f'backbones[{index}] ({entry.name}): ' if self.backbones is not None else ''
            raise ValueError(where + '; '.join(_messages(error))) from None

    def preprocessing(self) -> PreprocessingSpec:
        return PreprocessingSpec(inputs=[InputSpec(key=b.key, backbone=b.name, image_size=b.image_size)
                                         for b in self._training.backbones])

    def training(self) -> TrainingSpec:
        return self._training

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
        for backbone in self.training().backbones:
            if backbone.name != 'hub' and backbone.weights not in WEIGHTS_CHOICES:
                problems.append(f'weights: the file {backbone.weights!r} is on this machine, not in the '
                                f'containers; use imagenet-torchvision (converted into the image) or imagenet '
                                f'(downloaded by the Trainer)')
            if backbone.name == 'hub' and not _is_remote(backbone.hub_handle):
                problems.append(f'hub_handle: the folder {backbone.hub_handle!r} is on this machine, not in '
                                f'the containers; use a gs:// path or a handle URL')
        if problems:
            raise ConfigError('Configuration cannot run on Kubeflow:\n' + '\n'.join('  ' + p for p in problems))

    def ingestion(self) -> IngestionConfig:
        return IngestionConfig(**{name: getattr(self, name) for name in IngestionConfig.model_fields})


def _messages(error: ValidationError) -> List[str]:
    return [(('.'.join(str(p) for p in e['loc']) + ': ') if e['loc'] else '') +
            e['msg'].removeprefix('Value error, ') for e in error.errors()]


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
    if isinstance(resolved.get('hub_handle'), str):
        resolved['hub_handle'] = _resolve_local_handle(resolved['hub_handle'], base)
    if isinstance(resolved.get('backbones'), list):
        resolved['backbones'] = [_resolve_paths(item, base) if isinstance(item, dict) else item
                                 for item in resolved['backbones']]
    return resolved


def _resolve_local_handle(handle: str, base: Path) -> str:
    """A hub handle is a URL or a local folder; only the folder is relative to the config."""
    return handle if _is_remote(handle) else _resolve_path(handle, base)


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
        key = '.'.join(str(part) for part in problem['loc'])
        message = problem['msg'].removeprefix('Value error, ')
        if problem['type'] == 'extra_forbidden':
            message = 'unknown key (see pipeline/config.yaml for the keys that exist)'
        elif problem['type'] == 'missing':
            message = 'required key is missing'
        lines.append(f'  {key}: {message}' if key else f'  {message}')
    return '\n'.join(lines)


def config_path_from_env(explicit: Optional[str] = None) -> Path:
    """--config wins, then $PIPELINE_CONFIG (how the `tfx` CLI selects a config), then the default."""
    return Path(explicit or os.environ.get(PIPELINE_CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def configured_output_dir(path: Optional[os.PathLike] = None, overrides: Iterable[str] = ()) -> Optional[str]:
    """output_dir as configured, read without validating the config.

    Validation imports TensorFlow (through the backbone registry), which makes Keras write its
    settings file at once; a run needs output_dir first to keep that file out of the home folder.
    """
    try:
        value = _merged_values(config_path_from_env(str(path) if path else None), overrides).get('output_dir')
    except ConfigError:
        return None  # load_config reports it
    return value if isinstance(value, str) else None


def load_config(path: Optional[os.PathLike] = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Reads, merges and validates a config; every problem is a ConfigError naming its key."""
    config_path = config_path_from_env(str(path) if path else None)
    merged = _merged_values(config_path, overrides)
    try:
        return PipelineConfig(**merged)
    except ValidationError as error:
        source = str(config_path) + (' with --set ' + ' '.join(overrides) if overrides else '')
        raise ConfigError(_format_validation_error(error, source)) from None


def _merged_values(config_path: Path, overrides: Iterable[str]) -> Dict[str, Any]:
    """The config file's values with the --set overrides applied, paths resolved; not validated."""
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
    return _merge(raw, cli_values)
