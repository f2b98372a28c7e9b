"""`python -m kubeflow.runner`: the compiled spec, read back with kfp's own types."""
import json

import kfp.components
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.utils import import_utils

from conftest import kubeflow_config_values
from kubeflow import runner
from pipeline import tfx_pipeline
from pipeline.config import ConfigError, PipelineConfig

IMAGE = kubeflow_config_values()['container_image']
COMPONENTS = {'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'Transform', 'Trainer', 'Evaluator',
              'ModelReport', 'Pusher'}
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
    tasks = set(spec.root.dag.tasks)
    # The Resolver becomes two resolver tasks in Kubeflow's IR (model, then its blessing).
    assert COMPONENTS <= tasks and len(tasks - COMPONENTS) == 2
    assert all(name.startswith('latest_blessed_model_resolver') for name in tasks - COMPONENTS)
    spine = ['ImageExampleGen', 'Transform', 'Trainer', 'Evaluator', 'Pusher']
    assert all(_depends_on(spec, later, earlier) for earlier, later in zip(spine, spine[1:], strict=False))
    assert _depends_on(spec, 'Trainer', 'ImportSchemaGen')
    assert _depends_on(spec, 'Evaluator', 'latest_blessed_model_resolver-model-resolver')


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
    destination = json.loads(pusher.inputs.parameters['push_destination'].runtime_value.constant_value.string_value)
    assert destination['filesystem']['base_directory'] == 'gs://test-bucket/out/serving'


def test_user_code_comes_from_the_image_not_from_this_machine(spec):
    transform = spec.root.dag.tasks['Transform'].inputs.parameters
    trainer = spec.root.dag.tasks['Trainer'].inputs.parameters
    assert transform['preprocessing_fn'].runtime_value.constant_value.string_value == tfx_pipeline.TRANSFORM_FUNCTION
    assert trainer['run_fn'].runtime_value.constant_value.string_value == tfx_pipeline.TRAINER_FUNCTION
    assert 'module_file' not in transform and 'module_path' not in trainer
    schema = spec.root.dag.tasks['ImportSchemaGen'].inputs.parameters['schema_file']
    assert schema.runtime_value.constant_value.string_value == tfx_pipeline.IMAGE_SCHEMA_FILE
    # The functions resolve the way the containers resolve them: by import path.
    assert callable(import_utils.import_func_from_module(*tfx_pipeline.TRANSFORM_FUNCTION.rsplit('.', 1)))
    assert callable(import_utils.import_func_from_module(*tfx_pipeline.TRAINER_FUNCTION.rsplit('.', 1)))


def test_beam_args_reach_every_beam_component(spec):
    for task in BEAM_COMPONENTS:
        args = list(_container(spec, task).args)
        assert '--direct_num_workers=3' in args and '--direct_running_mode=multi_processing' in args, task


def test_dockerfile_installs_the_project_where_the_spec_expects_it():
    dockerfile = (tfx_pipeline.REPO_ROOT / 'Dockerfile').read_text()
    assert f'WORKDIR {tfx_pipeline.IMAGE_REPO_ROOT}\n' in dockerfile
    assert 'FROM tensorflow/tfx:1.16.0' in dockerfile


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
    (dict(serving_dir='s3://bucket/serving'), "serving_dir: 's3://bucket/serving' is not storage"),
    (dict(weights='none', data_root='/tmp'), "data_root: '/tmp' is not storage"),
    (dict(weights=str(tfx_pipeline.SCHEMA_FILE)), 'weights: the file .* is on this machine'),
])
def test_configs_that_cannot_run_on_a_cluster_are_refused_by_key(overrides, message):
    config = PipelineConfig(**kubeflow_config_values(**overrides))
    with pytest.raises(ConfigError, match=message):
        tfx_pipeline.create_pipeline(config, for_kubeflow=True)


def test_output_must_be_yaml_or_json(capsys):
    with pytest.raises(SystemExit):
        runner.main(['--output', 'spec.txt'])
    assert '--output must end in .yaml, .yml, .json' in capsys.readouterr().err
