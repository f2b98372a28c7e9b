"""The whole Trainer (TFX's executor, run_fn) mirrored on two devices, and in mixed precision.

TensorFlow takes its device list once per process, so each Trainer runs in a process of its
own (tests/trainer_devices_run.py) that first splits this machine's CPU into two logical
devices: MirroredStrategy then has two replicas, as on a node with two GPUs. The upstream
artifacts come from the pipeline's own ImageExampleGen, ImportSchemaGen and Transform, run once.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tfx import v1 as tfx
from tfx.proto.orchestration import pipeline_pb2

from conftest import CLASS_COLOURS, image_bytes, make_image_folder
from pipeline import tfx_pipeline
from trainer_devices_run import config_for

SCRIPT = Path(__file__).with_name('trainer_devices_run.py')
# recipe auto (the default) chooses the head's regularisation on cached features (the learning
# rate and augmentation are set, to keep the search short); 1 head epoch, 3 of fine-tuning.
MIRRORED = dict(distribution='mirrored', fine_tune_epochs=3, learning_rate=3e-3, augmentation=False)
# The head's keys set, so no head search: the mirrored run has one.
MIXED = dict(distribution='auto', mixed_precision='bfloat16', learning_rate=3e-3, dropout=0.2, head_l2=0.0,
             augmentation=False)


@pytest.fixture(scope='module')
def upstream(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('devices')
    make_image_folder(root / 'images', per_class=12)
    options = pipeline_pb2.RunOptions()
    options.partial_run.to_nodes.append('Transform')
    options.partial_run.snapshot_settings.latest_pipeline_run_strategy.SetInParent()
    pipeline = tfx_pipeline.create_pipeline(config_for(str(root)))
    tfx.orchestration.LocalDagRunner().run_with_ir(tfx_pipeline.local_ir(pipeline), run_options=options)
    return root


def _start(root: Path, out: Path, cpus: int, overrides: dict, *flags) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(root), str(out), str(cpus), json.dumps(overrides),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-5000:]
    return output


def _checkpoint_state(out: Path):
    found = list((out / 'Trainer' / 'checkpoints').glob('*/state.json'))
    return json.loads(found[0].read_text()) if found else None


@pytest.fixture(scope='module')
def mirrored(upstream, tmp_path_factory):
    """A mirrored Trainer killed after its first fine-tuning epoch, then run again to the end."""
    out = tmp_path_factory.mktemp('mirrored')
    first = _start(upstream, out, 2, MIRRORED, '--slow')
    deadline = time.time() + 600
    while time.time() < deadline:
        state = _checkpoint_state(out)
        if state and state['phase'] == 'fine-tuning' and state['epochs_done'] >= 2:
            break
        assert first.poll() is None, first.communicate()[0][-5000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    killed_output = first.communicate()[0]
    before = _checkpoint_state(out)
    output = _finish(_start(upstream, out, 2, MIRRORED))
    return dict(out=out, killed_output=killed_output, before=before, output=output)


@pytest.fixture(scope='module')
def mixed(upstream, tmp_path_factory):
    out = tmp_path_factory.mktemp('mixed')
    return dict(out=out, output=_finish(_start(upstream, out, 1, MIXED)))


def _summary(out: Path) -> dict:
    return json.loads((out / 'Trainer' / 'model_run' / '1' / 'training_summary.json').read_text())


def _serving(out: Path):
    return tf.saved_model.load(str(out / 'Trainer' / 'model' / '1' / 'Format-Serving'))


def test_mirrored_on_two_devices_trains_both_phases_and_resumes(mirrored):
    # The killed run chose the head on cached features with both replicas.
    assert 'Training on: MirroredStrategy strategy, 2 replica(s) (CPU:0, CPU:1)' in mirrored['killed_output']
    assert 'recipe auto chose for the head' in mirrored['killed_output']
    # Phase 2 ran above the frozen bottoms' outputs, killed and resumed (its optimizer restored).
    assert 'Frozen bottom: mobilenet_v2 below layer' in mirrored['killed_output']
    assert "above the frozen bottoms' outputs computed once" in mirrored['output']
    assert mirrored['before']['completed_phases'] == ['head']
    assert 'Resuming an interrupted training run from its checkpoint' in mirrored['output']
    summary = _summary(mirrored['out'])
    devices = summary['devices']
    assert (devices['strategy'], devices['replicas'], devices['precision_policy']) == ('MirroredStrategy', 2, 'float32')
    assert [name.rsplit('/', 1)[-1] for name in devices['devices']] == ['device:CPU:0', 'device:CPU:1']
    assert (devices['global_batch_size'], devices['per_replica_batch_size']) == (8, 4)
    assert summary['resumed_from_epoch'] == mirrored['before']['epochs_done']
    assert set(summary['phase_metrics']) == {'head', 'fine-tuning'}
    assert summary['epochs_trained'] == 4 and len(summary['history']['loss']) == 4
    assert 'trained on: MirroredStrategy strategy, 2 replica(s)' in \
        (mirrored['out'] / 'Trainer' / 'model_run' / '1' / 'training_summary.md').read_text()


def test_mixed_bfloat16_trains_and_serves_float32(mixed):
    devices = _summary(mixed['out'])['devices']
    assert (devices['strategy'], devices['replicas'], devices['precision_policy']) == ('default', 1, 'mixed_bfloat16')
    assert set(_summary(mixed['out'])['phase_metrics']) == {'head', 'fine-tuning'}
    assert 'Training on: default strategy, 1 replica(s) (CPU:0), precision mixed_bfloat16' in mixed['output']
    assert "above the frozen bottoms' outputs computed once" in mixed['output']
    signature = _serving(mixed['out']).signatures['serving_default']
    assert signature.structured_outputs['probabilities'].dtype == tf.float32
    # Exported in float32 (the trained weights in a float32 copy): TFLite, which has no
    # bfloat16, converts it.
    graph = signature.graph.as_graph_def()
    dtypes = {value.type for function in graph.library.function for node in function.node_def
              for value in node.attr.values()}
    assert types_pb2.DT_FLOAT in dtypes and types_pb2.DT_BFLOAT16 not in dtypes
    from components.tflite import variants
    model_dir = str(mixed['out'] / 'Trainer' / 'model' / '1' / 'Format-Serving')
    assert variants.check_types('float16', variants.tensor_types(variants.convert(model_dir, 'from_pixels',
                                                                                  'float16'))) is None


def test_mirrored_export_answers_raw_image_bytes_like_a_single_device_one(mirrored, mixed):
    names = sorted(CLASS_COLOURS)
    images = tf.constant([image_bytes(colour, fmt=fmt, seed=99) for colour in CLASS_COLOURS.values()
                          for fmt in ('PNG', 'JPEG')])
    answers = []
    for out in (mirrored['out'], mixed['out']):
        signature = _serving(out).signatures['serving_default']
        answers.append(signature)
        result = signature(image_bytes=images)
        probabilities = result['probabilities'].numpy()
        assert result['probabilities'].dtype == tf.float32 and probabilities.shape == (6, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert {name.decode() for name in result['class_name'].numpy()} <= set(names)
        np.testing.assert_array_equal(result['class_id'].numpy(), probabilities.argmax(axis=1))
    mirrored_signature, single_signature = answers
    assert mirrored_signature.structured_input_signature == single_signature.structured_input_signature
    assert mirrored_signature.structured_outputs == single_signature.structured_outputs
