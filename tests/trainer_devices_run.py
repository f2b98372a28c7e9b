"""TFX's Trainer executor running our run_fn in a process of its own, on N logical CPU devices.

    python tests/trainer_devices_run.py ROOT OUT CPUS CONFIG_JSON [--slow]

ROOT holds the upstream artifacts (test_trainer_devices.py runs the pipeline up to Transform
there); the config is conftest's tiny one for ROOT with CONFIG_JSON's keys on top, and the
Trainer gets the exec_properties create_pipeline gives it. CPUS logical CPU devices are made
before TensorFlow initialises, which can only happen once per process: hence a process per run.
--slow sleeps after each checkpoint so that the test can kill the run between epochs.
"""
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from conftest import tiny_config_values  # noqa: E402  (sets TF_USE_LEGACY_KERAS first)

import tensorflow as tf  # noqa: E402

SPLITS = {'train': 60, 'eval': 20, 'test': 20}


def config_for(root: str, **overrides):
    from pipeline.config import PipelineConfig
    return PipelineConfig(**tiny_config_values(os.path.join(root, 'images'), os.path.join(root, 'out'),
                                               split_ratios=SPLITS, **overrides))


def _use_logical_cpus(count: int) -> None:
    [cpu] = tf.config.list_physical_devices('CPU')
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def _upstream_artifacts(config):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    from tfx.types import artifact_utils
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(config.metadata_path))

    def artifact(type_name):
        [found] = store.get_artifacts_by_type(type_name)
        return [artifact_utils.deserialize_artifact(store.get_artifact_type(type_name), found)]

    return {'examples': artifact('Examples'), 'schema': artifact('Schema'),
            'transform_graph': artifact('TransformGraph')}


def _slow_checkpoints() -> None:
    from components.trainer import training
    save = training.TrainingCheckpoint.save

    def save_then_wait(self, *args, **kwargs):
        save(self, *args, **kwargs)
        time.sleep(1.5)

    training.TrainingCheckpoint.save = save_then_wait


def main():
    root, out, cpus, overrides = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    _use_logical_cpus(cpus)
    logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')
    from tfx.components.trainer import executor as trainer_executor
    from tfx.dsl.components.base import base_executor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from pipeline import tfx_pipeline
    if '--slow' in sys.argv:
        _slow_checkpoints()
    config = config_for(root, **overrides)
    [trainer] = [c for c in tfx_pipeline.create_pipeline(config).components if c.id == 'Trainer']
    exec_properties = {key: proto_utils.proto_to_json(value) if hasattr(value, 'DESCRIPTOR') else value
                       for key, value in trainer.exec_properties.items() if value is not None}
    outputs = {'model': standard_artifacts.Model(), 'model_run': standard_artifacts.ModelRun()}
    for key, artifact in outputs.items():  # TFX's layout: <node>/<output>/<execution>
        artifact.uri = os.path.join(out, 'Trainer', key, '1')
    context = base_executor.BaseExecutor.Context(tmp_dir=os.path.join(out, 'tmp'), unique_id='1')
    trainer_executor.GenericExecutor(context).Do(_upstream_artifacts(config), {k: [v] for k, v in outputs.items()},
                                                 exec_properties)


if __name__ == '__main__':
    main()
