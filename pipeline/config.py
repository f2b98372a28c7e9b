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
from typing import Any, Dict, Iterable, List, Literal, Optional, Union

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from components.data_validation.spec import DataValidationSpec, DriftThresholds
from components.data_validation.spec import Mode as DataValidationMode
from components.example_gen.spec import IngestionConfig
from components.storage import USES_S3_ENV
from components.strict_spec import StrictSpec, is_remote
from components.tflite.spec import DEFAULT_VARIANTS as DEFAULT_TFLITE_VARIANTS
from components.tflite.spec import TFLiteSpec, Variant as TFLiteVariant, each_variant_once
from components.trainer.spec import (SINGLE_INPUT_KEY, WEIGHTS_CHOICES, BackboneName, BackboneSpec, DevicesSpec,
                                     FineTuneAt, RecipeSpec, TrainingSpec)
from components.transform.spec import ImageOptions, InputSpec, PreprocessingSpec
from components.tuner.spec import TuningSpec

PIPELINE_CONFIG_ENV = 'PIPELINE_CONFIG'
DEFAULT_CONFIG_PATH = Path(__file__).with_name('config.yaml')

# Components that run in a container of their own on Kubeflow and may be given resources.
# ImageExampleGen is not among them: TFX's Kubeflow v2 compiler builds a FileBasedExampleGen's
# container without looking at its platform config, so resources set for it would be ignored.
KUBEFLOW_RESOURCE_COMPONENTS = ('StatisticsGen', 'ImportSchemaGen', 'DataValidator', 'Transform', 'Tuner', 'Trainer',
                                'TFLiteExport', 'ServedModelBaseline', 'Evaluator', 'ModelReport', 'Pusher',
                                'RecordDataBaseline')
# Every node of the pipeline: each runs in a pod of its own, which Kubernetes settings can place.
KUBEFLOW_NODES = ('ImageExampleGen',) + KUBEFLOW_RESOURCE_COMPONENTS
# Storage that TFX inside the containers can use: TFX reads and writes artifact URIs itself,
# through TensorFlow's file systems (s3:// from tensorflow-io, see components/storage) and
# Beam's.
KUBEFLOW_STORAGE_SCHEMES = ('gs://', 's3://')


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config."""


class BackboneEntry(StrictSpec):
    """An item of `backbones:`; unset fields take the top-level key of the same name."""

    name: BackboneName
    image_size: Optional[int] = None
    weights: Optional[str] = None
    alpha: Optional[float] = None
    padding: Optional[Literal['auto', 'keras', 'torchvision']] = None
    fine_tune_at: Optional[FineTuneAt] = None
    hub_handle: Optional[str] = None


_BACKBONE_KEYS = ('image_size', 'weights', 'alpha', 'padding', 'fine_tune_at', 'hub_handle')
# The top-level keys the Trainer's spec takes as they are.
_TRAINER_KEYS = tuple(RecipeSpec.model_fields) + tuple(DevicesSpec.model_fields)


class ComponentResources(StrictSpec):
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


class Toleration(StrictSpec):
    """A Kubernetes toleration: lets a pod onto nodes with a matching taint."""

    key: Optional[str] = None
    operator: Literal['Equal', 'Exists'] = 'Equal'
    value: Optional[str] = None
    effect: Optional[Literal['NoSchedule', 'PreferNoSchedule', 'NoExecute']] = None
    toleration_seconds: Optional[int] = Field(None, ge=0)

    @model_validator(mode='after')
    def _value_goes_with_equal(self) -> 'Toleration':
        if self.operator == 'Exists' and self.value is not None:
            raise ValueError('a toleration with operator Exists takes no value')
        if self.operator == 'Equal' and self.key is None:
            raise ValueError('a toleration with operator Equal needs a key')
        return self


class PodPlacement(StrictSpec):
    """Which nodes one component's pod may run on (Kubeflow Pipelines only)."""

    node_selector: Dict[str, str] = Field(default_factory=dict)
    tolerations: List[Toleration] = Field(default_factory=list)


class SecretAsEnv(StrictSpec):
    """Keys of a Kubernetes secret as environment variables of every step, e.g. S3 credentials."""

    secret_name: str = Field(min_length=1)
    keys: Dict[str, str] = Field(min_length=1, description='secret key -> environment variable')


class KubernetesConfig(StrictSpec):
    """Kubeflow's Kubernetes platform config (what kfp-kubernetes writes), from the config."""

    placement: Dict[str, PodPlacement] = Field(default_factory=dict)
    secrets_as_env: List[SecretAsEnv] = Field(default_factory=list)

    @field_validator('placement')
    @classmethod
    def _known_nodes(cls, value: Dict[str, PodPlacement]) -> Dict[str, PodPlacement]:
        unknown = sorted(set(value) - set(KUBEFLOW_NODES))
        if unknown:
            raise ValueError(f'no component named {", ".join(unknown)}; the components are {", ".join(KUBEFLOW_NODES)}')
        return value


class PipelineConfig(RecipeSpec, DevicesSpec, IngestionConfig, ImageOptions):
    """Everything: data, outputs, the model, the recipe, the gate and how the pipeline runs."""

    pipeline_name: str = Field('image-transfer-learning', pattern=r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
    data_root: str
    output_dir: str
    pipeline_root: Optional[str] = None
    metadata_path: Optional[str] = None
    serving_dir: Optional[str] = None
    cli_home: Optional[str] = None
    # (How folders are read and split: see IngestionConfig. How each image becomes a square RGB
    # picture, `background` and `resize`: see ImageOptions.)

    # The model: one backbone, or several side by side (`backbones`), then the head.
    backbone: BackboneName = 'mobilenet_v2'
    backbones: Optional[List[Union[BackboneName, BackboneEntry]]] = None
    image_size: int = 160
    alpha: float = 1.0
    weights: str = 'imagenet'
    padding: Literal['auto', 'keras', 'torchvision'] = 'auto'
    fine_tune_at: Optional[FineTuneAt] = None
    hub_handle: Optional[str] = None
    # (The head and the recipe: see RecipeSpec; the Trainer's devices: see DevicesSpec.)

    # The gate and the run.
    min_accuracy: float = Field(0.5, ge=0)
    max_accuracy_drop: float = Field(0.0, ge=0, le=1)
    # TFLite variants pushed beside the SavedModel (components/tflite); [] for none. A variant
    # losing more test accuracy than max_tflite_accuracy_drop against the SavedModel is not
    # pushed (-1 refuses every one).
    tflite: List[TFLiteVariant] = Field(default_factory=lambda: list(DEFAULT_TFLITE_VARIANTS))
    max_tflite_accuracy_drop: float = Field(0.01, ge=-1, le=1)
    # Data validation before Transform (components/data_validation): `block` stops a run whose
    # data has anomalies (schema, or drift past data_drift's thresholds from the previous
    # successful run, whose statistics are kept in data_baseline_dir); `warn` reports them and
    # goes on; `off` does not check.
    data_validation: DataValidationMode = 'block'
    data_drift: DriftThresholds = DriftThresholds()
    data_baseline_dir: Optional[str] = None
    beam_args: List[str] = Field(default_factory=lambda: ['--direct_running_mode=in_memory'])
    # An S3-compatible server for s3:// paths (MinIO: http://minio-service.kubeflow:9000);
    # unset: AWS. Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    s3_endpoint: Optional[str] = Field(None, pattern=r'^https?://[^/]+/?$')
    enable_cache: bool = True
    # Kubeflow Pipelines only (python -m kubeflow.runner); local runs ignore them.
    container_image: Optional[str] = None
    component_resources: Dict[str, ComponentResources] = Field(default_factory=dict)
    kubernetes: KubernetesConfig = KubernetesConfig()
    # Hyper-parameter search by TFX's Tuner before the Trainer (components/tuner): null or
    # absent, none; a mapping (`{}` for the defaults), on, with TuningSpec's keys.
    tuning: Optional[TuningSpec] = None

    _training: TrainingSpec = PrivateAttr()

    @field_validator('data_root')
    @classmethod
    def _data_root_exists(cls, value: str) -> str:
        if not is_remote(value) and not os.path.isdir(value):
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
            'data_baseline_dir': os.path.join(self.output_dir, 'data_baseline'),
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
            self._training = TrainingSpec(backbones=specs, **{k: getattr(self, k) for k in _TRAINER_KEYS})
        except ValidationError as error:
            raise ValueError('; '.join(_messages(error))) from None
        return self

    @model_validator(mode='after')
    def _tuning_has_a_use(self) -> 'PipelineConfig':
        if self.tuning and self.tuning.fine_tune_trials and self.fine_tune_epochs == 0:
            raise ValueError('tuning.fine_tune_trials: fine_tune_epochs is 0, so the Trainer would not use the '
                             'fine-tuning values the Tuner finds; set tuning.fine_tune_trials to 0')
        return self

    def tuning_custom_config(self) -> Optional[Dict[str, Any]]:
        """The Tuner's spec as it goes into the Tuner's custom_config (None: no Tuner)."""
        return self.tuning.model_dump(mode='json') if self.tuning else None

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
                                         for b in self._training.backbones],
                                 **{name: getattr(self, name) for name in ImageOptions.model_fields})

    def training(self) -> TrainingSpec:
        return self._training

    @field_validator('tflite')
    @classmethod
    def _each_variant_once(cls, value: List[str]) -> List[str]:
        return each_variant_once(value)

    def tflite_export(self) -> Optional[TFLiteSpec]:
        """TFLiteExport's spec (None: no variants, no TFLiteExport step)."""
        if not self.tflite:
            return None
        return TFLiteSpec(variants=self.tflite, max_accuracy_drop=self.max_tflite_accuracy_drop,
                          **{name: getattr(self, name) for name in ImageOptions.model_fields})

    def check_runs_on_kubeflow(self, local_root: Optional[str] = None) -> None:
        """Raises a ConfigError naming every key that cannot work in containers on a cluster.

        The containers see nothing of this machine: data, artifacts and pushed models must be on
        storage TFX can use from there, and the weights must come from the image or the internet.
        With local_root (kfp.local's containers on this machine), they see that one folder of
        this machine, at the same path, and nothing else.
        """
        problems = []
        if not self.container_image:
            problems.append('container_image: required; the image built from the Dockerfile (see README, '
                            '"Run on Kubeflow")')
        for key in ('data_root', 'pipeline_root', 'serving_dir', 'data_baseline_dir'):
            value = getattr(self, key)
            if local_root is not None:
                if is_remote(value) or os.path.commonpath([os.path.abspath(value), local_root]) != local_root:
                    problems.append(f'{key}: {value!r} is not inside {local_root}, the one folder kfp.local '
                                    f'mounts into the containers')
            elif not value.startswith(KUBEFLOW_STORAGE_SCHEMES):
                problems.append(f'{key}: {value!r} is not storage TFX can use in the containers; use a '
                                f'{" or ".join(KUBEFLOW_STORAGE_SCHEMES)} URI')
        for backbone in self.training().backbones:
            if backbone.name != 'hub' and backbone.weights not in WEIGHTS_CHOICES:
                problems.append(f'weights: the file {backbone.weights!r} is on this machine, not in the '
                                f'containers; use imagenet-torchvision (converted into the image) or imagenet '
                                f'(downloaded by the Trainer)')
            if backbone.name == 'hub' and not is_remote(backbone.hub_handle):
                problems.append(f'hub_handle: the folder {backbone.hub_handle!r} is on this machine, not in '
                                f'the containers; use a gs:// path or a handle URL')
        if problems:
            raise ConfigError('Configuration cannot run on Kubeflow:\n' + '\n'.join('  ' + p for p in problems))

    def uses_s3(self) -> bool:
        paths = [self.data_root, self.pipeline_root, self.serving_dir, self.data_baseline_dir]
        return any(path.startswith('s3://') for path in paths)

    def storage_environment(self) -> Dict[str, str]:
        """Environment every process of a run needs for its storage (empty without s3://).

        tensorflow-io reads S3_ENDPOINT (with its scheme), Beam's boto3 AWS_ENDPOINT_URL.
        """
        if not self.uses_s3():
            return {}
        env = {USES_S3_ENV: '1'}
        if self.s3_endpoint:
            env.update(S3_ENDPOINT=self.s3_endpoint.rstrip('/'), AWS_ENDPOINT_URL=self.s3_endpoint.rstrip('/'))
        return env

    def data_validation_spec(self) -> DataValidationSpec:
        return DataValidationSpec(mode=self.data_validation, drift=self.data_drift)

    def ingestion(self) -> IngestionConfig:
        return IngestionConfig(**{name: getattr(self, name) for name in IngestionConfig.model_fields})


def _messages(error: ValidationError) -> List[str]:
    return [(('.'.join(str(p) for p in e['loc']) + ': ') if e['loc'] else '') +
            e['msg'].removeprefix('Value error, ') for e in error.errors()]


# Keys whose values are file-system paths and are resolved relative to where they were written.
_PATH_KEYS = ('data_root', 'output_dir', 'pipeline_root', 'metadata_path', 'serving_dir', 'data_baseline_dir',
              'cli_home')


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or is_remote(value):
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
    return handle if is_remote(handle) else _resolve_path(handle, base)


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


def add_config_arguments(parser) -> None:
    """--config and --set, as every command of this project takes them."""
    parser.add_argument('--config', help='YAML config (default: $PIPELINE_CONFIG, else pipeline/config.yaml)')
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config key (a YAML value; dotted keys for nested ones); repeatable')


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
