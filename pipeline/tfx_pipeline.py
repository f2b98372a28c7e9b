"""`create_pipeline`: every TFX component of the pipeline, wired top to bottom.

    ImageExampleGen -> StatisticsGen (per split, and per class)
    ImportSchemaGen (schemas/schema.pbtxt)
    DataValidator (unless `data_validation: off`: the schema, and drift from the previous
                   successful run's statistics; with `block`, anomalies stop the run here)
    Transform (after DataValidator; decode, resize, backbone scaling; graph only, applied by
               Trainer and serving)
    [Tuner (with `tuning:`: KerasTuner trials of the head, then of fine-tuning) -> best_hyperparameters]
    Trainer (frozen backbone + head, then fine-tuning; the Tuner's best values when it ran)
    TFLiteExport (with `tflite:`: the SavedModel + TFLite variants within their accuracy budget)
    ServedModelBaseline (the model in serving_dir now) -> Evaluator (test split, gate)
    Pusher (only if blessed: the SavedModel, with the accepted TFLite variants inside it)
    ModelReport (the Trainer's reports, the Evaluator's metrics and the verdict, in one folder;
                 the Tuner's trials and the data validation's findings too when they ran)
    RecordDataBaseline (last: this run's statistics become the next run's drift baseline)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List

import tensorflow as tf
from tfx.components import Pusher, StatisticsGen, Trainer, Transform, Tuner
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.compiler import compiler
from tfx.orchestration import metadata
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import pusher_pb2, trainer_pb2, transform_pb2
from tfx.proto.orchestration import pipeline_pb2
from tfx_bsl.public.proto import slicing_spec_pb2

from components.data_validation.component import DataValidator, RecordDataBaseline
from components.evaluator import gate
from components.evaluator.baseline import BaselineAwareEvaluator, ServedModelBaseline
from components.example_gen.component import ImageExampleGen
from components.features import CLASS_NAME_KEY
from components.report.component import ModelReportGen
from components.tflite.component import TFLiteExport
from components.tuner.spec import CUSTOM_CONFIG_KEY as TUNING_CONFIG_KEY
from pipeline.config import PipelineConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPONENTS_DIR = REPO_ROOT / 'components'
SCHEMA_FILE = REPO_ROOT / 'schemas' / 'schema.pbtxt'
# What ImageExampleGen runs besides components/example_gen/: the decoder it checks images with
# (the one Transform uses), the feature names and the spec base.
INGESTION_SHARED_MODULES = ('transform/image_decoding.py', 'features.py', 'strict_spec.py')

# User code is named by import path, locally (this project is installed in the virtualenv) and
# on Kubeflow (config.container_image has it installed, see Dockerfile). TFX's module_file
# alternative builds a wheel of the file and pip-installs it into a temporary folder for each
# component at every run: seconds of work for nothing when the code is already installed.
TRANSFORM_FUNCTION = 'components.transform.image_preprocessing.preprocessing_fn'
TRAINER_FUNCTION = 'components.trainer.image_trainer.run_fn'
TUNER_FUNCTION = 'components.tuner.tuner_fn.tuner_fn'
IMAGE_REPO_ROOT = '/opt/image-transfer-learning'
IMAGE_SCHEMA_FILE = f'{IMAGE_REPO_ROOT}/schemas/schema.pbtxt'

# Nodes whose result depends on something outside their inputs (the serving directory's
# content) and so must run every time: LocalDagRunner and Kubeflow must not take them from cache.
BASELINE_NODE_ID = 'ServedModelBaseline'
DATA_VALIDATOR_NODE_ID = 'DataValidator'
RECORD_DATA_BASELINE_NODE_ID = 'RecordDataBaseline'
UNCACHED_NODES = (BASELINE_NODE_ID, DATA_VALIDATOR_NODE_ID, RECORD_DATA_BASELINE_NODE_ID)

# Beam flags that make TFX skip packaging itself into a temporary sdist for every Beam
# component (~50 MB left in the temp directory each time, and seconds of work): any one of
# them tells TFX that the workers already have their dependencies.
_BEAM_DEPENDENCY_FLAGS = ('--extra_package', '--extra_packages', '--setup_file', '--requirements_file',
                          '--sdk_container_image', '--worker_harness_container_image')


def code_fingerprint() -> str:
    """sha256 of components/, the code the Transform and Trainer functions import, their specs included.

    TFX's cache key holds the functions' import paths, not their code; adding this to their
    custom_config makes a change anywhere in components/ re-run them instead of reusing a
    stale cached result.
    """
    return _fingerprint(sorted(COMPONENTS_DIR.rglob('*.py')))


def ingestion_code_fingerprint() -> str:
    """sha256 of ImageExampleGen's code: TFX's cache key holds the executor's name, not its code.

    Only the ingestion code, so that changing the model does not re-read every image.
    """
    return _fingerprint(sorted((COMPONENTS_DIR / 'example_gen').rglob('*.py')) + [
        COMPONENTS_DIR / name for name in INGESTION_SHARED_MODULES])


def _fingerprint(files: List[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def staged_schema_file(config: PipelineConfig) -> str:
    """Copies the schema to a content-addressed path under pipeline_root.

    ImportSchemaGen's cache key is the path of the schema file, not its content, so an edited
    schema would otherwise be ignored in favour of the cached one.
    """
    content = SCHEMA_FILE.read_bytes()
    digest = hashlib.sha256(content).hexdigest()[:16]
    staged = os.path.join(config.pipeline_root, '_schemas', digest, SCHEMA_FILE.name)
    if not tf.io.gfile.exists(staged):
        tf.io.gfile.makedirs(os.path.dirname(staged))
        tf.io.gfile.copy(str(SCHEMA_FILE), staged, overwrite=True)
    return staged


def effective_beam_args(beam_args: List[str]) -> List[str]:
    """The configured flags, plus what keeps TFX from packaging itself for workers that have it.

    The DirectRunner runs in this environment, and an EXTERNAL or PROCESS environment's SDK
    workers run in one made for this project (pipeline/flink: this virtualenv; on a cluster:
    the project's image beside each task manager); neither installs staged packages. A flag
    whose value is never used by them stops TFX from building a throw-away sdist of itself
    (~50 MB) for every Beam component and staging it.
    """
    args = list(beam_args)
    value = {a.split('=', 1)[0]: a.split('=', 1)[1] for a in args if '=' in a}
    has_dependency_flag = any(a.split('=', 1)[0] in _BEAM_DEPENDENCY_FLAGS for a in args)
    if has_dependency_flag:
        return args
    if value.get('--runner', 'DirectRunner') in ('DirectRunner', 'direct'):
        args.append('--sdk_container_image=unused-by-the-local-direct-runner')
    elif value.get('--environment_type', '').upper() in ('EXTERNAL', 'PROCESS', 'LOOPBACK'):
        args.append('--sdk_container_image=unused-by-external-and-process-environments')
    return args


def local_ir(pipeline: Pipeline) -> pipeline_pb2.Pipeline:
    """The IR LocalDagRunner.run would compile, except that UNCACHED_NODES always run.

    TFX compiles every node with the pipeline's enable_cache; the IR has a switch per node.
    (LocalDagRunner.run also resolves module_file dependencies; this pipeline has none.)
    """
    ir = compiler.Compiler().compile(pipeline)
    for node in ir.nodes:
        if node.pipeline_node.node_info.id in UNCACHED_NODES:
            node.pipeline_node.execution_options.caching_options.enable_cache = False
    return ir


def statistics_options():
    """StatisticsGen's options: statistics of every split, and of each class within it.

    Slicing by class_name makes the statistics answer "what do this class's images look like",
    and lets DataValidator compare each class with the previous run's.
    """
    import tensorflow_data_validation as tfdv
    return tfdv.StatsOptions(slicing_config=slicing_spec_pb2.SlicingConfig(
        slicing_specs=[slicing_spec_pb2.SlicingSpec(feature_keys=[CLASS_NAME_KEY])]))


def _components_custom_config(values: Dict, fingerprint: str) -> Dict:
    return dict(values, code_version=fingerprint)


def create_pipeline(config: PipelineConfig, for_kubeflow: bool = False) -> Pipeline:
    """The pipeline for the LocalDagRunner or, with for_kubeflow, for KubeflowV2DagRunner.

    Locally the schema is staged under pipeline_root. On Kubeflow the containers already hold
    it (the image has this project installed), so nothing is copied at compile time, and ML
    Metadata is the cluster's.
    """
    transform_code = dict(preprocessing_fn=TRANSFORM_FUNCTION)
    trainer_code = dict(run_fn=TRAINER_FUNCTION)
    if for_kubeflow:  # kubeflow.runner has checked that the config can run in containers
        schema_file = IMAGE_SCHEMA_FILE
        metadata_connection_config = None
    else:
        schema_file = staged_schema_file(config)
        metadata_connection_config = metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    fingerprint = code_fingerprint()

    example_gen = ImageExampleGen(config.data_root, config.ingestion(), code_version=ingestion_code_fingerprint())

    schema_gen = ImportSchemaGen(schema_file=schema_file)

    # With the schema, TFDV treats image_raw as image bytes (no top values of encoded images).
    statistics_gen = StatisticsGen(examples=example_gen.outputs['examples'],
                                                  schema=schema_gen.outputs['schema'],
                                                  stats_options=statistics_options())

    data_validator = None
    if config.data_validation != 'off':
        data_validator = DataValidator(
            statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'],
            baseline_dir=config.data_baseline_dir,
            validation_spec=config.data_validation_spec().model_dump_json()).with_id(DATA_VALIDATOR_NODE_ID)

    transform = Transform(
        examples=example_gen.outputs['examples'],
        schema=schema_gen.outputs['schema'],
        **transform_code,
        # Only the graph is needed: the Trainer and the exported model both apply it, so
        # decoded images (hundreds of KB each) are never written out.
        materialize=False,
        disable_statistics=True,
        disable_analyzer_cache=True,
        splits_config=transform_pb2.SplitsConfig(analyze=['train']),
        custom_config=_components_custom_config(config.preprocessing().model_dump(), fingerprint),
    )
    if data_validator:  # a task dependency: Transform reads the examples, not the validator's output
        transform.add_upstream_node(data_validator)

    tuner = None
    if config.tuning:
        # The Trainer's custom_config, so that trials train what the Trainer will, plus the search.
        tuner = Tuner(
            tuner_fn=TUNER_FUNCTION,
            examples=example_gen.outputs['examples'],
            transform_graph=transform.outputs['transform_graph'],
            schema=schema_gen.outputs['schema'],
            train_args=trainer_pb2.TrainArgs(splits=['train']),
            eval_args=trainer_pb2.EvalArgs(splits=['eval']),
            custom_config=dict(_components_custom_config(config.training().model_dump(), fingerprint),
                               **{TUNING_CONFIG_KEY: config.tuning_custom_config()}),
        )

    trainer = Trainer(
        **trainer_code,
        examples=example_gen.outputs['examples'],
        transform_graph=transform.outputs['transform_graph'],
        schema=schema_gen.outputs['schema'],
        hyperparameters=tuner.outputs['best_hyperparameters'] if tuner else None,
        train_args=trainer_pb2.TrainArgs(splits=['train']),
        eval_args=trainer_pb2.EvalArgs(splits=['eval']),
        custom_config=_components_custom_config(config.training().model_dump(), fingerprint),
    )

    tflite_spec = config.tflite_export()
    tflite = TFLiteExport(
        model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
        spec=tflite_spec.model_dump_json(), code_version=fingerprint).with_id('TFLiteExport') if tflite_spec else None

    baseline = ServedModelBaseline(serving_dir=config.serving_dir).with_id(BASELINE_NODE_ID)

    evaluator = BaselineAwareEvaluator(
        examples=example_gen.outputs['examples'],
        model=trainer.outputs['model'],
        baseline_model=baseline.outputs['baseline'],
        example_splits=['test'],
        eval_config=gate.eval_config(config.min_accuracy, config.max_accuracy_drop),
    ).with_id('Evaluator')

    model_report = ModelReportGen(
        model_run=trainer.outputs['model_run'],
        examples=example_gen.outputs['examples'],  # for the files skipped at ingestion
        evaluation=evaluator.outputs['evaluation'],
        blessing=evaluator.outputs['blessing'],
        **({'tuner_results': tuner.outputs['tuner_results']} if tuner else {}),
        **({'tflite': tflite.outputs['exported']} if tflite else {}),
        **({'data_validation': data_validator.outputs['anomalies']} if data_validator else {}),
    ).with_id('ModelReport')

    # The Evaluator judged the Trainer's model; TFLiteExport's holds the same SavedModel, byte
    # for byte, with the accepted TFLite files inside, so that is what gets pushed.
    pusher = Pusher(
        model=tflite.outputs['exported'] if tflite else trainer.outputs['model'],
        model_blessing=evaluator.outputs['blessing'],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=config.serving_dir)),
    )

    # Last, so that only a run that got through the Pusher and the report (blessed or not)
    # leaves its statistics as the baseline the next run's data is compared with.
    record_data_baseline = RecordDataBaseline(
        statistics=statistics_gen.outputs['statistics'],
        baseline_dir=config.data_baseline_dir).with_id(RECORD_DATA_BASELINE_NODE_ID)
    record_data_baseline.add_upstream_nodes([pusher, model_report])

    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, *([data_validator] if data_validator else []), transform,
                    *([tuner] if tuner else []), trainer, *([tflite] if tflite else []), baseline, evaluator,
                    model_report, pusher, record_data_baseline],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=effective_beam_args(config.beam_args),
    )
