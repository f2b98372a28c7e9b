"""`beam_args` reach every Beam-powered component and the Beam pipeline its executor runs.

The Kubeflow side (the flags in each Beam component's container arguments) is checked in
test_kubeflow_runner.
"""
import pytest
from apache_beam.options.pipeline_options import DirectOptions
from tfx.dsl.compiler import compiler
from tfx.orchestration.portable import beam_executor_operator, data_types
from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2
from tfx.types import standard_artifacts

from components.example_gen.executor import Executor
from components.example_gen.spec import IngestionConfig
from conftest import example_gen_exec_properties, tiny_config_values
from pipeline import tfx_pipeline
from pipeline.config import PipelineConfig

BEAM_ARGS = ['--direct_running_mode=multi_threading', '--direct_num_workers=2']


@pytest.fixture
def executor_specs(tmp_path, image_folder):
    """Executor spec of every node, from the IR that LocalDagRunner runs."""
    config = PipelineConfig(**tiny_config_values(image_folder, tmp_path / 'out', beam_args=BEAM_ARGS))
    ir = compiler.Compiler().compile(tfx_pipeline.create_pipeline(config))
    deployment = pipeline_pb2.IntermediateDeploymentConfig()
    ir.deployment_config.Unpack(deployment)
    specs = {}
    for node_id, packed in deployment.executor_specs.items():
        if packed.Is(executable_spec_pb2.BeamExecutableSpec.DESCRIPTOR):
            specs[node_id] = executable_spec_pb2.BeamExecutableSpec()
            packed.Unpack(specs[node_id])
        else:
            specs[node_id] = None
    return specs


def test_every_beam_component_gets_the_configured_flags(executor_specs):
    beam_nodes = {node for node, spec in executor_specs.items() if spec is not None}
    assert beam_nodes == {'ImageExampleGen', 'StatisticsGen', 'Transform', 'Evaluator'}
    for node in beam_nodes:
        assert list(executor_specs[node].beam_pipeline_args)[:2] == BEAM_ARGS, node


def test_the_executor_builds_its_beam_pipeline_with_them(executor_specs, image_folder, tmp_path, monkeypatch):
    """Runs ImageExampleGen's executor the way LocalDagRunner's launcher does."""
    seen = []
    make_pipeline = Executor._make_beam_pipeline

    def recording(executor):
        beam_pipeline = make_pipeline(executor)
        seen.append(beam_pipeline.options.view_as(DirectOptions))
        return beam_pipeline

    monkeypatch.setattr(Executor, '_make_beam_pipeline', recording)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / 'examples')
    execution = data_types.ExecutionInfo(
        execution_id=1, input_dict={}, output_dict={'examples': [examples]},
        exec_properties=example_gen_exec_properties(image_folder, IngestionConfig()),
        tmp_dir=str(tmp_path / 'tmp') + '/', execution_output_uri=str(tmp_path / 'executor_output.pb'),
        stateful_working_dir=str(tmp_path / 'stateful'), pipeline_run_id='run-1')
    operator = beam_executor_operator.BeamExecutorOperator(executor_specs['ImageExampleGen'])
    operator.run_executor(execution)

    assert seen, 'the executor built no Beam pipeline'
    assert all((options.direct_running_mode, options.direct_num_workers) == ('multi_threading', 2)
               for options in seen)
    assert (tmp_path / 'examples' / 'Split-train').is_dir()
