"""`python -m kubeflow.runner`: the compiled spec, read back with kfp's own types."""
import json

import kfp.components
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.utils import import_utils

from components.data_validation.spec import DriftThresholds
from conftest import kubeflow_config_values
from kubeflow import runner
from pipeline import tfx_pipeline
from pipeline.config import ConfigError, PipelineConfig

IMAGE = kubeflow_config_values()['container_image']
COMPONENTS = {'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'DataValidator', 'Transform', 'Trainer',
              'TFLiteExport', 'ServedModelBaseline', 'Evaluator', 'ModelReport', 'Pusher', 'RecordDataBaseline'}
# The only executor kinds open-source Kubeflow Pipelines runs (its Argo compiler answers
# "resolver executors not implemented" to the rest); kfp.local runs the same two.
OPEN_SOURCE_EXECUTORS = {'container', 'importer'}
BEAM_COMPONENTS = {'ImageExampleGen', 'StatisticsGen', 'Transform', 'Evaluator'}
ContainerSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec


@pytest.fixture(scope='module')
def spec(kubeflow_spec_yaml) -> pipeline_spec_pb2.PipelineSpec:
    # ParseDict rejects fields kfp's PipelineSpec does not have.
    return json_format.ParseDict(yaml.safe_load(kubeflow_spec_yaml.read_text()), pipeline_spec_pb2.PipelineSpec())


def _container(spec, task_name) -> ContainerSpec:
    """The task's container, as kfp's typed PipelineContainerSpec (the spec stores it as a Struct)."""
    executor_label = spec.components[spec.root.dag.tasks[task_name].component_ref.name].executor_label
    deployment = json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                                       pipeline_spec_pb2.PipelineDeploymentConfig())
    return deployment.executors[executor_label].container


def _depends_on(spec, task, other) -> bool:
    """Whether task runs after other, directly or through other tasks."""
    direct = spec.root.dag.tasks[task].dependent_tasks
    return other in direct or any(_depends_on(spec, parent, other) for parent in direct)


def test_all_components_in_dependency_order(spec):
    assert set(spec.root.dag.tasks) == COMPONENTS
    spine = ['ImageExampleGen', 'Transform', 'Trainer', 'Evaluator', 'Pusher']
    assert all(_depends_on(spec, later, earlier) for earlier, later in zip(spine, spine[1:], strict=False))
    assert _depends_on(spec, 'Trainer', 'ImportSchemaGen')
    assert _depends_on(spec, 'Evaluator', 'ServedModelBaseline')


def _executor_kinds(spec_dict) -> set:
    return {kind for executor in spec_dict['deploymentSpec']['executors'].values() for kind in executor}


@pytest.mark.parametrize('overrides', [
    dict(),
    dict(component_resources={}),
    dict(backbones=['mobilenet_v2', {'name': 'efficientnet_b0', 'weights': 'imagenet'}]),
    dict(component_resources={'Trainer': {'accelerator_type': 'nvidia.com/gpu', 'accelerator_count': 2},
                              'Evaluator': {'cpu_limit': 2}}),
], ids=['default', 'no-resources', 'ensemble', 'two-gpus'])
def test_only_executors_open_source_kubeflow_runs(tmp_path, overrides):
    output = tmp_path / 'spec.yaml'
    runner.compile_pipeline(PipelineConfig(**kubeflow_config_values(**overrides)), output)
    spec = yaml.safe_load(output.read_text())
    assert _executor_kinds(spec) <= OPEN_SOURCE_EXECUTORS
    assert set(spec['root']['dag']['tasks']) == COMPONENTS
    assert spec['schemaVersion'] == '2.1.0'


def test_data_validator_runs_before_transform_and_the_baseline_is_recorded_last(spec):
    tasks = spec.root.dag.tasks
    assert 'DataValidator' in tasks['Transform'].dependent_tasks
    assert _depends_on(spec, 'DataValidator', 'StatisticsGen') and _depends_on(spec, 'DataValidator', 'ImportSchemaGen')
    assert {'Pusher', 'ModelReport'} <= set(tasks['RecordDataBaseline'].dependent_tasks)
    for task in ('DataValidator', 'RecordDataBaseline'):  # their result depends on the baseline folder
        assert not tasks[task].caching_options.enable_cache, task
        baseline_dir = tasks[task].inputs.parameters['baseline_dir'].runtime_value.constant
        assert baseline_dir.string_value == 'gs://test-bucket/out/data_baseline'
    parameters = tasks['DataValidator'].inputs.parameters
    validation = json.loads(parameters['validation_spec'].runtime_value.constant.string_value)
    assert validation == {'mode': 'block', 'drift': DriftThresholds().model_dump()}


def test_the_baseline_is_never_taken_from_cache(spec):
    tasks = spec.root.dag.tasks
    assert not tasks['ServedModelBaseline'].caching_options.enable_cache
    assert tasks['Evaluator'].caching_options.enable_cache and tasks['Trainer'].caching_options.enable_cache
    serving_dir = tasks['ServedModelBaseline'].inputs.parameters['serving_dir'].runtime_value.constant
    assert serving_dir.string_value == 'gs://test-bucket/out/serving'


def test_kfp_loads_the_yaml_as_a_pipeline(kubeflow_spec_yaml):
    assert kfp.components.load_component_from_file(str(kubeflow_spec_yaml)).name == 'tiny-test'


def test_trainer_requests_the_configured_gpu_and_limits(spec):
    resources = _container(spec, 'Trainer').resources
    assert resources.accelerator.type == resources.accelerator.resource_type == 'nvidia.com/gpu'
    assert resources.accelerator.count == 1 and resources.accelerator.resource_count == '1'
    assert resources.resource_cpu_limit == '8' and resources.cpu_limit == 8
    assert resources.resource_memory_limit == '32G' and resources.memory_limit == 32
    transform = _container(spec, 'Transform').resources
    assert transform.resource_cpu_limit == '500m' and transform.cpu_limit == 0.5
    assert transform.memory_limit == pytest.approx(4 * 2**30 / 1e9)
    assert not transform.HasField('accelerator')
    assert not _container(spec, 'Evaluator').HasField('resources')  # nothing configured, nothing requested


def test_image_and_pipeline_root_are_the_configured_ones(spec):
    for task in COMPONENTS:
        assert _container(spec, task).image == IMAGE, task
    assert spec.default_pipeline_root == 'gs://test-bucket/out/pipeline_root'
    assert spec.pipeline_info.name == 'tiny-test'


def test_pusher_is_gated_by_the_evaluator(spec):
    pusher = spec.root.dag.tasks['Pusher']
    blessing = pusher.inputs.artifacts['model_blessing'].task_output_artifact
    assert (blessing.producer_task, blessing.output_artifact_key) == ('Evaluator', 'blessing')
    assert 'Evaluator' in pusher.dependent_tasks
    destination = json.loads(pusher.inputs.parameters['push_destination'].runtime_value.constant.string_value)
    assert destination['filesystem']['base_directory'] == 'gs://test-bucket/out/serving'


def test_tflite_export_is_a_cpu_step_whose_model_the_pusher_pushes(spec):
    tasks = spec.root.dag.tasks
    pushed = tasks['Pusher'].inputs.artifacts['model'].task_output_artifact
    assert (pushed.producer_task, pushed.output_artifact_key) == ('TFLiteExport', 'exported')
    source = tasks['TFLiteExport'].inputs.artifacts['model'].task_output_artifact
    assert (source.producer_task, source.output_artifact_key) == ('Trainer', 'model')
    judged = tasks['Evaluator'].inputs.artifacts['model'].task_output_artifact
    assert (judged.producer_task, judged.output_artifact_key) == ('Trainer', 'model')
    container = _container(spec, 'TFLiteExport')
    assert container.image == IMAGE
    assert '--executor_class_path' in container.args and not container.resources.accelerator.count
    spec_json = json.loads(tasks['TFLiteExport'].inputs.parameters['spec'].runtime_value.constant.string_value)
    assert spec_json['variants'] == ['float16', 'int8'] and spec_json['max_accuracy_drop'] == 0.01


def test_user_code_comes_from_the_image_not_from_this_machine(spec):
    transform = spec.root.dag.tasks['Transform'].inputs.parameters
    trainer = spec.root.dag.tasks['Trainer'].inputs.parameters
    assert transform['preprocessing_fn'].runtime_value.constant.string_value == tfx_pipeline.TRANSFORM_FUNCTION
    assert trainer['run_fn'].runtime_value.constant.string_value == tfx_pipeline.TRAINER_FUNCTION
    assert 'module_file' not in transform and 'module_path' not in trainer
    schema = spec.root.dag.tasks['ImportSchemaGen'].inputs.parameters['schema_file']
    assert schema.runtime_value.constant.string_value == tfx_pipeline.IMAGE_SCHEMA_FILE
    # The functions resolve the way the containers resolve them: by import path.
    assert callable(import_utils.import_func_from_module(*tfx_pipeline.TRANSFORM_FUNCTION.rsplit('.', 1)))
    assert callable(import_utils.import_func_from_module(*tfx_pipeline.TRAINER_FUNCTION.rsplit('.', 1)))


def test_beam_args_reach_every_beam_component(spec):
    for task in BEAM_COMPONENTS:
        args = list(_container(spec, task).args)
        assert '--direct_num_workers=3' in args and '--direct_running_mode=multi_processing' in args, task


def test_dockerfile_installs_the_lock_on_its_python_where_the_spec_expects_the_project():
    import re
    dockerfile = (tfx_pipeline.REPO_ROOT / 'Dockerfile').read_text()
    assert f'WORKDIR {tfx_pipeline.IMAGE_REPO_ROOT}\n' in dockerfile
    assert '-r /tmp/locks/requirements.lock' in dockerfile
    locked_python = re.match(r'# Python ([0-9.]+)', (tfx_pipeline.REPO_ROOT / 'requirements.lock').read_text())[1]
    assert f'ARG BASE_IMAGE=python:{locked_python}-slim-bookworm\n' in dockerfile


def test_json_is_a_vertex_pipeline_job(tmp_path):
    config = PipelineConfig(**kubeflow_config_values())
    output = tmp_path / 'job.json'
    runner.compile_pipeline(config, output)
    job = json_format.ParseDict(json.loads(output.read_text()), pipeline_spec_pb2.PipelineJob())
    assert job.runtime_config.gcs_output_directory == config.pipeline_root
    assert set(COMPONENTS) <= set(job.pipeline_spec['root']['dag']['tasks'])


@pytest.mark.parametrize('overrides,message', [
    (dict(container_image=None), 'container_image: required'),
    (dict(output_dir='/local/out'), "pipeline_root: '/local/out/pipeline_root' is not storage"),
    (dict(serving_dir='hdfs://cluster/serving'), "serving_dir: 'hdfs://cluster/serving' is not storage"),
    (dict(weights='none', data_root='/tmp'), "data_root: '/tmp' is not storage"),
    (dict(weights=str(tfx_pipeline.SCHEMA_FILE)), 'weights: the file .* is on this machine'),
])
def test_configs_that_cannot_run_on_a_cluster_are_refused_by_key(tmp_path, overrides, message):
    config = PipelineConfig(**kubeflow_config_values(**overrides))
    with pytest.raises(ConfigError, match=message):
        runner.compile_pipeline(config, tmp_path / 'spec.yaml')


def test_output_must_be_yaml_or_json(capsys):
    with pytest.raises(SystemExit):
        runner.main(['--output', 'spec.txt'])
    assert '--output must end in .yaml, .yml, .json' in capsys.readouterr().err


A100_TRAINER = {
    'placement': {'Trainer': {
        'node_selector': {'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-40GB'},
        'tolerations': [{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}]}},
    'secrets_as_env': [{'secret_name': 's3-credentials',
                        'keys': {'accesskey': 'AWS_ACCESS_KEY_ID', 'secretkey': 'AWS_SECRET_ACCESS_KEY'}}],
}


def _executor_label(spec_dict, task):
    return spec_dict['components'][spec_dict['root']['dag']['tasks'][task]['componentRef']['name']]['executorLabel']


def test_kubernetes_placement_and_secrets_become_the_platform_config(tmp_path):
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
    output = tmp_path / 'spec.yaml'
    runner.compile_pipeline(PipelineConfig(**kubeflow_config_values(kubernetes=A100_TRAINER)), output)
    spec_dict, platform = yaml.safe_load_all(output.read_text())
    executors = platform['platforms']['kubernetes']['deploymentSpec']['executors']
    assert set(executors) == {_executor_label(spec_dict, task) for task in COMPONENTS}  # secrets reach every step
    parsed = {label: json_format.ParseDict(value, k8s.KubernetesExecutorConfig()) for label, value in executors.items()}
    trainer = parsed[_executor_label(spec_dict, 'Trainer')]
    assert dict(trainer.node_selector.labels) == {'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-40GB'}
    assert [(t.key, t.operator, t.effect) for t in trainer.tolerations] == [('nvidia.com/gpu', 'Exists', 'NoSchedule')]
    transform = parsed[_executor_label(spec_dict, 'Transform')]
    assert not transform.node_selector.labels and not transform.tolerations
    for config in parsed.values():
        assert [(m.secret_key, m.env_var) for m in config.secret_as_env[0].key_to_env] == [
            ('accesskey', 'AWS_ACCESS_KEY_ID'), ('secretkey', 'AWS_SECRET_ACCESS_KEY')]
    # kfp's own loader reads the two documents.
    assert kfp.components.load_component_from_file(str(output)).name == 'tiny-test'


def test_no_kubernetes_settings_no_platform_document(kubeflow_spec_yaml):
    assert len(list(yaml.safe_load_all(kubeflow_spec_yaml.read_text()))) == 1


@pytest.mark.parametrize('kubernetes,message', [
    ({'placement': {'Trainr': {}}}, 'kubernetes.placement: .*no component named Trainr'),
    ({'placement': {'Trainer': {'tolerations': [{'key': 'a', 'operator': 'Exists', 'value': 'b'}]}}},
     'operator Exists takes no value'),
    ({'secrets_as_env': [{'secret_name': 's3', 'keys': {}}]}, 'kubernetes.secrets_as_env.0.keys'),
    ({'node_selector': {}}, 'kubernetes.node_selector: unknown key'),
])
def test_bad_kubernetes_settings_name_the_key(tmp_path, kubernetes, message):
    from pipeline.config import load_config
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(kubeflow_config_values(kubernetes=kubernetes)))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_s3_storage_reaches_every_step(tmp_path):
    output = tmp_path / 'spec.yaml'
    config = PipelineConfig(**kubeflow_config_values(data_root='s3://bucket/images', output_dir='s3://bucket/out',
                                                     s3_endpoint='http://minio-service.kubeflow:9000'))
    runner.compile_pipeline(config, output)
    spec = yaml.safe_load(output.read_text())
    expected = {'IMAGE_PIPELINE_USES_S3': '1', 'S3_ENDPOINT': 'http://minio-service.kubeflow:9000',
                'AWS_ENDPOINT_URL': 'http://minio-service.kubeflow:9000'}
    trainer = _executor_label(spec, 'Trainer')
    for label, executor in spec['deploymentSpec']['executors'].items():
        growth = {} if label == trainer else {'TF_FORCE_GPU_ALLOW_GROWTH': 'true'}
        assert {e['name']: e['value'] for e in executor['container']['env']} == {**expected, **growth}, label
    assert spec['defaultPipelineRoot'] == 's3://bucket/out/pipeline_root'


def test_on_two_gpus_the_spec_says_what_the_trainer_does_and_other_steps_share_gpu_memory(tmp_path):
    output = tmp_path / 'spec.yaml'
    resources = {'Trainer': {'accelerator_type': 'nvidia.com/gpu', 'accelerator_count': 2},
                 'Transform': {'accelerator_type': 'nvidia.com/gpu'}}
    runner.compile_pipeline(PipelineConfig(**kubeflow_config_values(component_resources=resources, batch_size=32)),
                            output)
    header = [line for line in output.read_text().splitlines() if line.startswith('#')]
    assert header[1] == ('# Trainer (2 x nvidia.com/gpu on one node): distribution: auto -> MirroredStrategy over '
                         '2 GPU(s), one replica each; batch_size 32 is the global batch, 16 per replica per step; '
                         'learning rates not scaled')
    assert header[2].startswith('# Trainer (2 x nvidia.com/gpu on one node): mixed_precision: auto -> mixed_float16 '
                                'if every GPU has compute capability 7.0 or more')
    assert 'float32' in header[2] and 'TF_FORCE_GPU_ALLOW_GROWTH=true' in header[3]
    spec = json_format.ParseDict(yaml.safe_load(output.read_text()), pipeline_spec_pb2.PipelineSpec())
    assert _container(spec, 'Trainer').resources.accelerator.count == 2
    for task in COMPONENTS:
        env = {e.name: e.value for e in _container(spec, task).env}
        assert env == ({} if task == 'Trainer' else {'TF_FORCE_GPU_ALLOW_GROWTH': 'true'}), task


TUNING = {'head_trials': 2, 'fine_tune_trials': 1, 'fine_tune_trial_epochs': 1}


def test_with_tuning_the_tuner_task_feeds_the_trainer_and_the_report(tmp_path):
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
    output = tmp_path / 'spec.yaml'
    config = PipelineConfig(**kubeflow_config_values(
        tuning=TUNING, component_resources={'Tuner': {'cpu_limit': 4, 'memory_limit': '16G'}},
        kubernetes={'placement': {'Tuner': {'node_selector': {'pool': 'tuning'}}}}))
    runner.compile_pipeline(config, output)
    spec_dict, platform = yaml.safe_load_all(output.read_text())
    assert _executor_kinds(spec_dict) <= OPEN_SOURCE_EXECUTORS
    assert set(spec_dict['root']['dag']['tasks']) == COMPONENTS | {'Tuner'}
    spec = json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec())
    tasks = spec.root.dag.tasks
    tuner = tasks['Tuner']
    assert tuner.inputs.parameters['tuner_fn'].runtime_value.constant.string_value == tfx_pipeline.TUNER_FUNCTION
    assert callable(import_utils.import_func_from_module(*tfx_pipeline.TUNER_FUNCTION.rsplit('.', 1)))
    for key, producer in (('examples', 'ImageExampleGen'), ('transform_graph', 'Transform'),
                          ('schema', 'ImportSchemaGen')):
        assert tuner.inputs.artifacts[key].task_output_artifact.producer_task == producer, key
    best = tasks['Trainer'].inputs.artifacts['hyperparameters'].task_output_artifact
    assert (best.producer_task, best.output_artifact_key) == ('Tuner', 'best_hyperparameters')
    assert 'Tuner' in tasks['Trainer'].dependent_tasks
    results = tasks['ModelReport'].inputs.artifacts['tuner_results'].task_output_artifact
    assert (results.producer_task, results.output_artifact_key) == ('Tuner', 'tuner_results')
    container = _container(spec, 'Tuner')
    assert container.image == IMAGE and list(container.args)[:2] == ['--executor_class_path',
                                                                      'tfx.components.tuner.executor.Executor']
    assert container.resources.resource_cpu_limit == '4' and container.resources.resource_memory_limit == '16G'
    executors = platform['platforms']['kubernetes']['deploymentSpec']['executors']
    placed = json_format.ParseDict(executors[_executor_label(spec_dict, 'Tuner')], k8s.KubernetesExecutorConfig())
    assert dict(placed.node_selector.labels) == {'pool': 'tuning'}
    # Without tuning, the report's optional input is not declared at all.
    runner.compile_pipeline(PipelineConfig(**kubeflow_config_values()), tmp_path / 'plain.yaml')
    plain = yaml.safe_load((tmp_path / 'plain.yaml').read_text())
    report = plain['components'][plain['root']['dag']['tasks']['ModelReport']['componentRef']['name']]
    assert set(report['inputDefinitions']['artifacts']) == {'model_run', 'evaluation', 'blessing', 'tflite',
                                                            'examples', 'data_validation'}
