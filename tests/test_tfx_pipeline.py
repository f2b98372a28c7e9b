"""create_pipeline's wiring, the gate's configuration and the helpers around it."""
import json

import pytest
from google.protobuf import struct_pb2
from tfx.proto import evaluator_pb2  # noqa: F401  (registers the protos used by the Evaluator spec)
from tfx.proto import example_gen_pb2
from tfx.utils import proto_utils

from components.evaluator import gate
from conftest import tiny_config_values
from pipeline import tfx_pipeline
from pipeline.config import PipelineConfig


@pytest.fixture
def config(tmp_path, image_folder):
    return PipelineConfig(**tiny_config_values(image_folder, tmp_path / 'out', min_accuracy=0.8,
                                               max_accuracy_drop=0.02))


def test_components_in_order_and_wired(config):
    pipeline = tfx_pipeline.create_pipeline(config)
    ids = [c.id for c in pipeline.components]  # TFX sorts them topologically
    assert sorted(ids) == sorted(['ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'DataValidator',
                                  'Transform', 'Trainer', 'TFLiteExport', 'ServedModelBaseline', 'Evaluator',
                                  'ModelReport', 'Pusher', 'RecordDataBaseline'])
    spine = ['ImageExampleGen', 'Transform', 'Trainer', 'Evaluator', 'Pusher']
    assert [ids.index(c) for c in spine] == sorted(ids.index(c) for c in spine)
    by_id = {c.id: c for c in pipeline.components}
    evaluator, pusher, trainer = by_id['Evaluator'], by_id['Pusher'], by_id['Trainer']
    assert json.loads(evaluator.exec_properties['example_splits']) == ['test']
    assert evaluator.inputs['baseline_model'].producer_component_id == 'ServedModelBaseline'
    assert by_id['ServedModelBaseline'].exec_properties['serving_dir'] == config.serving_dir
    assert pusher.inputs['model_blessing'].producer_component_id == 'Evaluator'
    assert trainer.inputs['examples'].producer_component_id == 'ImageExampleGen'
    assert trainer.inputs['transform_graph'].producer_component_id == 'Transform'
    assert by_id['Transform'].upstream_nodes >= {by_id['DataValidator']}
    assert by_id['DataValidator'].inputs['statistics'].producer_component_id == 'StatisticsGen'
    assert by_id['RecordDataBaseline'].upstream_nodes >= {pusher, by_id['ModelReport']}
    assert pipeline.metadata_connection_config.sqlite.filename_uri == config.metadata_path
    assert pipeline.pipeline_info.pipeline_root == config.pipeline_root


def test_components_get_only_their_config(config):
    by_id = {c.id: c for c in tfx_pipeline.create_pipeline(config).components}
    transform_config = json.loads(by_id['Transform'].exec_properties['custom_config'])
    trainer_config = json.loads(by_id['Trainer'].exec_properties['custom_config'])
    assert set(transform_config) == {'inputs', 'background', 'resize', 'code_version'}
    assert 'min_accuracy' not in trainer_config and trainer_config['backbones'][0]['alpha'] == 0.35
    assert transform_config['code_version'] == trainer_config['code_version'] == tfx_pipeline.code_fingerprint()
    example_gen = by_id['ImageExampleGen'].exec_properties
    custom = proto_utils.json_to_proto(example_gen['custom_config'], example_gen_pb2.CustomConfig())
    reading = struct_pb2.Struct()
    custom.custom_config.Unpack(reading)
    assert dict(reading) == {'apply_exif_orientation': True, 'max_image_pixels': 100_000_000,
                             'drop_unusable_classes': False,
                             'code_version': tfx_pipeline.ingestion_code_fingerprint()}
    output = proto_utils.json_to_proto(example_gen['output_config'], example_gen_pb2.Output())
    assert output.split_config.partition_feature_name == 'content_sha256'


def test_gate_thresholds_apply_to_the_overall_slice_only():
    eval_config = gate.eval_config(min_accuracy=0.8, max_accuracy_drop=0.02)
    accuracy = [m for m in eval_config.metrics_specs[0].metrics if m.class_name == 'SparseCategoricalAccuracy'][0]
    assert not accuracy.HasField('threshold')
    [per_slice] = accuracy.per_slice_thresholds
    assert len(per_slice.slicing_specs) == 1 and per_slice.slicing_specs[0] == type(per_slice.slicing_specs[0])()
    assert per_slice.threshold.value_threshold.lower_bound.value == 0.8
    assert per_slice.threshold.change_threshold.absolute.value == pytest.approx(-0.02)
    assert eval_config.model_specs[0].signature_name == 'from_examples'
    assert eval_config.model_specs[0].label_key == 'label'


def test_direct_runner_gets_a_dependency_flag_so_tfx_builds_no_sdist():
    assert tfx_pipeline.effective_beam_args(['--direct_running_mode=in_memory'])[-1].startswith(
        '--sdk_container_image=')
    flink = ['--runner=FlinkRunner', '--flink_master=localhost:8081']
    assert tfx_pipeline.effective_beam_args(flink) == flink
    own = ['--extra_package=/dist/app.tar.gz']
    assert tfx_pipeline.effective_beam_args(own) == own


def test_external_and_process_workers_get_a_dependency_flag_too():
    """Their SDK workers run in an environment made for the project (pipeline/flink)."""
    for environment in ('EXTERNAL', 'PROCESS'):
        flink = ['--runner=PortableRunner', '--job_endpoint=127.0.0.1:8099', f'--environment_type={environment}']
        assert tfx_pipeline.effective_beam_args(flink)[-1].startswith('--sdk_container_image=')
    docker = ['--runner=PortableRunner', '--job_endpoint=127.0.0.1:8099', '--environment_type=DOCKER']
    assert tfx_pipeline.effective_beam_args(docker) == docker


def test_schema_is_staged_by_content(config, monkeypatch, tmp_path):
    first = tfx_pipeline.staged_schema_file(config)
    assert open(first).read() == tfx_pipeline.SCHEMA_FILE.read_text()
    assert tfx_pipeline.staged_schema_file(config) == first
    edited = tmp_path / 'schema.pbtxt'
    edited.write_text(tfx_pipeline.SCHEMA_FILE.read_text() + '\n# edited\n')
    monkeypatch.setattr(tfx_pipeline, 'SCHEMA_FILE', edited)
    assert tfx_pipeline.staged_schema_file(config) != first


def test_tflite_variants_are_pushed_in_the_model_the_evaluator_judged(config, tmp_path, image_folder):
    by_id = {c.id: c for c in tfx_pipeline.create_pipeline(config).components}
    tflite, pusher = by_id['TFLiteExport'], by_id['Pusher']
    assert tflite.inputs['model'].producer_component_id == 'Trainer'
    assert tflite.inputs['examples'].producer_component_id == 'ImageExampleGen'
    assert json.loads(tflite.exec_properties['spec'])['variants'] == ['float16', 'int8']
    assert json.loads(tflite.exec_properties['spec'])['max_accuracy_drop'] == 0.01
    assert by_id['Evaluator'].inputs['model'].producer_component_id == 'Trainer'
    assert pusher.inputs['model'].producer_component_id == 'TFLiteExport'
    assert by_id['ModelReport'].inputs['tflite'].producer_component_id == 'TFLiteExport'

    without = PipelineConfig(**tiny_config_values(image_folder, tmp_path / 'out2', tflite=[]))
    by_id = {c.id: c for c in tfx_pipeline.create_pipeline(without).components}
    assert 'TFLiteExport' not in by_id and 'tflite' not in by_id['ModelReport'].inputs
    assert by_id['Pusher'].inputs['model'].producer_component_id == 'Trainer'


def test_data_validation_off_leaves_the_validator_out_but_still_records_the_baseline(tmp_path, image_folder):
    config = PipelineConfig(**tiny_config_values(image_folder, tmp_path / 'out', data_validation='off'))
    by_id = {c.id: c for c in tfx_pipeline.create_pipeline(config).components}
    assert 'DataValidator' not in by_id and 'RecordDataBaseline' in by_id
    assert not by_id['Transform'].upstream_nodes - {by_id['ImageExampleGen'], by_id['ImportSchemaGen']}


def test_without_tuning_there_is_no_tuner(config):
    by_id = {c.id: c for c in tfx_pipeline.create_pipeline(config).components}
    assert config.tuning is None and 'Tuner' not in by_id
    assert 'hyperparameters' not in by_id['Trainer'].inputs
    assert 'tuner_results' not in by_id['ModelReport'].inputs


def test_tuner_feeds_the_trainer_and_the_report(tmp_path, image_folder):
    config = PipelineConfig(**tiny_config_values(image_folder, tmp_path / 'out',
                                                 tuning={'head_trials': 2, 'fine_tune_trials': 1}))
    pipeline = tfx_pipeline.create_pipeline(config)
    ids = [c.id for c in pipeline.components]
    by_id = {c.id: c for c in pipeline.components}
    tuner, trainer, report = by_id['Tuner'], by_id['Trainer'], by_id['ModelReport']
    assert ids.index('Transform') < ids.index('Tuner') < ids.index('Trainer')
    assert tuner.exec_properties['tuner_fn'] == tfx_pipeline.TUNER_FUNCTION
    for key, producer in (('examples', 'ImageExampleGen'), ('transform_graph', 'Transform'),
                          ('schema', 'ImportSchemaGen')):
        assert tuner.inputs[key].producer_component_id == producer, key
    assert json.loads(tuner.exec_properties['train_args']) == {'splits': ['train']}
    assert json.loads(tuner.exec_properties['eval_args']) == {'splits': ['eval']}
    hyperparameters = trainer.inputs['hyperparameters']
    assert (hyperparameters.producer_component_id, hyperparameters.output_key) == ('Tuner', 'best_hyperparameters')
    results = report.inputs['tuner_results']
    assert (results.producer_component_id, results.output_key) == ('Tuner', 'tuner_results')
    # The Tuner trains what the Trainer trains: the Trainer's custom_config, plus the search.
    tuner_config = json.loads(tuner.exec_properties['custom_config'])
    trainer_config = json.loads(trainer.exec_properties['custom_config'])
    assert {key: value for key, value in tuner_config.items() if key != 'tuning'} == trainer_config
    assert tuner_config['tuning']['head_trials'] == 2 and tuner_config['tuning']['fine_tune_trials'] == 1
    # The search space is in the Tuner's cache key, not in the Trainer's.
    other = PipelineConfig(**tiny_config_values(image_folder, tmp_path / 'out',
                                                tuning={'head_trials': 2, 'fine_tune_trials': 1, 'dropout': None}))
    other_by_id = {c.id: c for c in tfx_pipeline.create_pipeline(other).components}
    assert other_by_id['Tuner'].exec_properties['custom_config'] != tuner.exec_properties['custom_config']
    assert other_by_id['Trainer'].exec_properties['custom_config'] == trainer.exec_properties['custom_config']
