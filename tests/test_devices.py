"""The Trainer's devices and precision (components/trainer/devices.py) and their config keys.

On one CPU device, in this process: the decisions, the precision policy of the model built
under it, and training in mixed float16 with its loss-scaling optimizer, interrupted and
resumed. Several devices need a process of their own: test_trainer_devices.py.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import yaml

from components.trainer import devices, training
from components.trainer import model as model_lib
from conftest import training_spec
from pipeline.config import ConfigError, PipelineConfig, load_config

T4 = devices.Gpu('/physical_device:GPU:0', 'Tesla T4', (7, 5))
P100 = devices.Gpu('/physical_device:GPU:1', 'Tesla P100-PCIE-16GB', (6, 0))


def test_keys_default_to_auto_and_reach_the_trainer():
    config = PipelineConfig(data_root='.', output_dir='out')
    assert (config.distribution, config.mixed_precision, config.jit_compile) == ('auto', 'auto', False)
    trainer = config.training().model_dump()
    assert (trainer['distribution'], trainer['mixed_precision'], trainer['jit_compile']) == ('auto', 'auto', False)


def test_unquoted_off_in_yaml_means_off(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('data_root: .\noutput_dir: o\nmixed_precision: off\ndistribution: none\n')
    config = load_config(path)
    assert (config.mixed_precision, config.distribution) == ('off', 'none')
    assert config.training().mixed_precision == 'off'


@pytest.mark.parametrize('key,value,message', [
    ('distribution', 'multi_worker', "distribution: Input should be 'auto', 'mirrored' or 'none'"),
    ('mixed_precision', 'float8', "mixed_precision: Input should be 'auto', 'float16', 'bfloat16' or 'off'"),
    ('mixed_precision', True, "mixed_precision: Input should be 'auto'"),
    ('jit_compile', 'sometimes', 'jit_compile: Input should be a valid boolean'),
])
def test_bad_values_are_named(tmp_path, key, value, message):
    path = tmp_path / 'c.yaml'
    path.write_text(yaml.safe_dump({'data_root': '.', 'output_dir': 'o', key: value}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_which_devices_are_mirrored():
    two, one, cpus = ['GPU:0', 'GPU:1'], ['GPU:0'], ['CPU:0', 'CPU:1']
    assert devices.mirrored_devices('auto', two, cpus) == two
    assert devices.mirrored_devices('auto', one, cpus) is None  # one GPU: nothing to mirror onto
    assert devices.mirrored_devices('auto', [], cpus) is None  # CPUs are only mirrored when asked
    assert devices.mirrored_devices('mirrored', one, cpus) == one
    assert devices.mirrored_devices('mirrored', [], cpus) == cpus
    assert devices.mirrored_devices('none', two, cpus) is None


def test_auto_precision_is_float16_only_where_tensor_cores_run_it():
    assert devices.precision_policy('auto', [T4, T4], random_backbone=False)[0] == 'mixed_float16'
    policy, reason = devices.precision_policy('auto', [T4, P100], random_backbone=False)
    assert policy == 'float32' and 'Tesla P100-PCIE-16GB (compute capability 6.0)' in reason
    assert devices.precision_policy('auto', [], random_backbone=False)[0] == 'float32'
    assert devices.precision_policy('auto', [devices.Gpu('GPU:0')], random_backbone=False)[0] == 'float32'
    policy, reason = devices.precision_policy('auto', [T4], random_backbone=True)
    assert policy == 'float32' and 'underflow' in reason
    assert devices.precision_policy('bfloat16', [], random_backbone=True)[0] == 'mixed_bfloat16'
    assert devices.precision_policy('float16', [P100], random_backbone=False)[0] == 'mixed_float16'
    assert devices.precision_policy('off', [T4], random_backbone=False)[0] == 'float32'


def test_what_the_trainer_does_on_a_two_gpu_node_in_words():
    config = PipelineConfig(data_root='.', output_dir='out', batch_size=32)
    strategy, precision = devices.on_a_node(config, gpus=2, batch_size=32)
    assert 'MirroredStrategy over 2 GPU(s)' in strategy and '16 per replica' in strategy
    assert 'learning rates not scaled' in strategy
    assert 'mixed_float16 if every GPU has compute capability 7.0' in precision
    strategy, _ = devices.on_a_node(config.model_copy(update=dict(distribution='none')), gpus=2, batch_size=32)
    assert 'the default strategy, one device (GPU:0 alone trains of 2)' in strategy


def test_on_this_machine_one_device_and_the_policy_is_put_back():
    spec = training_spec(mixed_precision='bfloat16', head_epochs=1, fine_tune_epochs=0, learning_rate=1e-2)
    before = tf_keras.mixed_precision.global_policy().name
    with devices.training_devices(spec) as chosen:
        assert tf_keras.mixed_precision.global_policy().name == 'mixed_bfloat16'
        classifier = model_lib.build_classifier(spec, 3)
    assert tf_keras.mixed_precision.global_policy().name == before
    summary = chosen.summary()
    assert (summary['strategy'], summary['replicas'], summary['precision_policy']) == ('default', 1, 'mixed_bfloat16')
    assert summary['devices'][0].endswith('CPU:0') and summary['per_replica_batch_size'] == spec.batch_size
    assert 'default strategy, 1 replica(s) (CPU:0), precision mixed_bfloat16' in summary['description']
    # Computations in bfloat16, variables and the output layer in float32.
    convolution = next(layer for layer in classifier.bases['image'].layers if isinstance(layer, tf_keras.layers.Conv2D))
    assert convolution.compute_dtype == 'bfloat16'
    assert classifier.model.get_layer('logits').compute_dtype == 'float32'
    assert all(weight.dtype == tf.float32 for weight in classifier.model.weights)
    logits = classifier.model({'image': tf.zeros((2, 32, 32, 3))}, training=False)
    assert logits.dtype == tf.float32


class _Killed(Exception):
    pass


class _KillAfter(tf_keras.callbacks.Callback):
    """Ends the process's training like a kill would, after the epoch's checkpoint is written."""

    def __init__(self, epochs: int):
        super().__init__()
        self._epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self._epochs:
            raise _Killed()


def test_float16_trains_with_loss_scaling_and_resumes_its_optimizer(tmp_path):
    spec = training_spec(mixed_precision='float16', head_epochs=1, fine_tune_epochs=2, learning_rate=1e-2,
                         batch_size=8)
    rng = np.random.default_rng(4)
    images = rng.uniform(-1, 1, (24, 32, 32, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(({'image': images}, rng.integers(0, 3, 24))).batch(8)
    checkpoint = training.TrainingCheckpoint(str(tmp_path))
    with devices.training_devices(spec):
        classifier = model_lib.build_classifier(spec, 3)
        with pytest.raises(_Killed):  # after the first fine-tuning epoch
            training.train_two_phases(classifier, spec, data, data, checkpoint, callbacks=[_KillAfter(2)])
        assert isinstance(classifier.model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
        saved_steps = int(classifier.model.optimizer.iterations.numpy())
        assert checkpoint.load().phase == training.FINE_TUNE and saved_steps == 3

        resumed = model_lib.build_classifier(spec, 3)
        state = training.train_two_phases(resumed, spec, data, data, checkpoint)
    assert state.resumed_from_epoch == 2 and state.completed_phases == [training.HEAD, training.FINE_TUNE]
    # The loss-scaling optimizer came back with its step count: one epoch of 3 steps, then 3 more.
    assert int(resumed.model.optimizer.iterations.numpy()) == 6
    assert np.isfinite(state.history['loss']).all() and len(state.history['loss']) == 3


def test_jit_compile_trains_the_head_with_xla(tmp_path):
    spec = training_spec(jit_compile=True, head_epochs=2, fine_tune_epochs=0, learning_rate=1e-2)
    classifier = model_lib.build_classifier(spec, 3)
    rng = np.random.default_rng(5)
    features = rng.normal(size=(24, classifier.features.output_shape[-1])).astype(np.float32)
    labels = rng.integers(0, 3, 24)
    cached = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    images = tf.data.Dataset.from_tensor_slices(({'image': np.zeros((24, 32, 32, 3), np.float32)}, labels)).batch(8)
    state = training.train_two_phases(classifier, spec, images, images, training.TrainingCheckpoint(str(tmp_path)),
                                      head_features=(cached, cached))
    assert len(state.history['loss']) == 2 and np.isfinite(state.history['loss']).all()
    assert classifier.model._jit_compile  # noqa: SLF001  (compiled for evaluation with the spec's flag)


def test_every_replica_gets_an_example_of_every_batch():
    # tf.distribute splits 8 into 4 + 4, filling in order: a last batch of 2 would go [2, 0].
    assert devices.inference_batch_size(18, 8, replicas=2) == 9  # 9 + 9
    assert devices.inference_batch_size(21, 8, replicas=2) == 8  # 8 + 8 + 5: [4, 1] last
    assert devices.inference_batch_size(17, 8, replicas=1) == 8
    assert devices.inference_batch_size(3, 8, replicas=2) == 8  # one batch of 3: [2, 1]
    with pytest.raises(ValueError, match='a split of 1 example\\(s\\) cannot give each of 2 replicas one'):
        devices.inference_batch_size(1, 8, replicas=2)
    # On one replica (this process) nothing changes: the last, short batch is kept.
    examples = tf.data.Dataset.range(18).map(lambda i: ({'image': tf.zeros((2,))}, i))
    sizes = [int(label.shape[0]) for _, label in devices.replica_batches(examples, 8, 18, training=True)]
    assert sizes == [8, 8, 2]


def test_a_mixed_precision_model_is_exported_as_its_float32_copy():
    from components.trainer import image_trainer
    spec = training_spec(mixed_precision='bfloat16', augmentation=True, head_epochs=1, fine_tune_epochs=0,
                         learning_rate=1e-2)
    stats = (np.zeros(1280), np.full(1280, 1e-12))
    with devices.training_devices(spec) as chosen:
        classifier = model_lib.build_classifier(spec, 3, feature_stats=stats)
    trained = image_trainer._Trained(spec, classifier, None, None, {}, [], [], stats)  # noqa: SLF001
    copy = image_trainer._float32_model(trained, chosen.policy)  # noqa: SLF001
    assert {layer.compute_dtype for layer in copy.layers} == {'float32'}
    images = {'image': tf.random.uniform((4, 32, 32, 3), -1, 1, seed=3)}
    mixed = classifier.model(images, training=False).numpy()
    # The same weights: bfloat16's rounding (3 significant digits) apart.
    np.testing.assert_allclose(copy(images, training=False), mixed, atol=0.05 * np.abs(mixed).max())
