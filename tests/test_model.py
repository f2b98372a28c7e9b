"""The classifier: head shape, frozen and fine-tuned parameters, BatchNorm, weights handling."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components import backbones
from components import model as model_lib
from pipeline.config import TrainingConfig

SMALL = dict(image_size=32, alpha=0.35, weights='none', augmentation=False)


def build(num_classes, **overrides):
    params = TrainingConfig(**{**SMALL, **overrides})
    return params, model_lib.build_classifier(params, num_classes)


def test_layer_count_constant_matches_keras():
    _, classifier = build(3)
    assert len(classifier.base.layers) == backbones.MOBILENET_V2.num_layers == 154


@pytest.mark.parametrize('num_classes,logits', [(2, 1), (5, 5)])
def test_head_and_outputs(num_classes, logits):
    _, classifier = build(num_classes)
    layer_types = [type(layer).__name__ for layer in classifier.model.layers]
    assert layer_types == ['InputLayer', 'Functional', 'GlobalAveragePooling2D', 'Dropout', 'Dense']
    out = classifier.model(np.zeros((4, 32, 32, 3), np.float32))
    assert out.shape == (4, logits)
    probs = model_lib.probabilities(out, num_classes).numpy()
    assert probs.shape == (4, num_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_binary_uses_binary_crossentropy_and_multiclass_sparse():
    params, binary = build(2)
    model_lib.compile_for_head(binary, params)
    assert isinstance(binary.model.loss, tf_keras.losses.BinaryCrossentropy)
    params, multi = build(4)
    model_lib.compile_for_head(multi, params)
    assert isinstance(multi.model.loss, tf_keras.losses.SparseCategoricalCrossentropy)


def test_phases_freeze_and_unfreeze_the_right_parameters():
    params, classifier = build(3, fine_tune_at=100)
    head_params = 1280 * 3 + 3  # MobileNetV2 ends in 1280 channels at every alpha <= 1
    model_lib.compile_for_head(classifier, params)
    trainable, frozen = model_lib.trainable_counts(classifier.model)
    assert trainable == head_params
    assert isinstance(classifier.model.optimizer, tf_keras.optimizers.Adam)

    model_lib.compile_for_fine_tuning(classifier, params)
    expected = sum(int(np.prod(w.shape)) for layer in classifier.base.layers[100:]
                   for w in layer.trainable_weights)
    trainable_ft, frozen_ft = model_lib.trainable_counts(classifier.model)
    assert trainable_ft == head_params + expected
    assert trainable + frozen == trainable_ft + frozen_ft
    assert all(not layer.trainable for layer in classifier.base.layers[:100])
    assert isinstance(classifier.model.optimizer, tf_keras.optimizers.RMSprop)
    assert classifier.model.optimizer.learning_rate.numpy() == pytest.approx(1e-5)


def test_batchnorm_stays_in_inference_mode_while_fine_tuning():
    params, classifier = build(3, fine_tune_at=100)
    model_lib.compile_for_fine_tuning(classifier, params)
    bn = [layer for layer in classifier.base.layers[100:]
          if isinstance(layer, tf_keras.layers.BatchNormalization)][0]
    assert bn.trainable  # unfrozen, so its gamma/beta train...
    before = bn.moving_mean.numpy().copy()
    images = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    classifier.model.fit(images, np.array([0, 1, 2, 0, 1, 2, 0, 1]), epochs=1, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)  # ...but its statistics do not move


def test_fine_tune_at_beyond_the_base_is_an_error():
    with pytest.raises(ValueError, match='fine_tune_at=154 but mobilenet_v2 has only 154 layers'):
        build(3, fine_tune_at=154)


def test_batchnorm_calibration_revives_a_random_base():
    _, classifier = build(3)
    images = tf.random.uniform((32, 32, 32, 3), -1, 1, seed=1)
    before = float(tf.math.reduce_std(classifier.base(images, training=False)))
    model_lib.calibrate_batchnorm(classifier.base, images)
    after = float(tf.math.reduce_std(classifier.base(images, training=False)))
    assert before < 1e-3 < 0.05 < after
    assert not classifier.base.trainable
    assert all(layer.momentum == 0.999 for layer in classifier.base.submodules
               if isinstance(layer, tf_keras.layers.BatchNormalization))


def test_imagenet_weights_offline_fail_with_instructions(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception('URL fetch failure: [Errno -2] Name or service not known')
    monkeypatch.setattr(tf_keras.utils, 'get_file', offline)
    params = TrainingConfig(image_size=160, alpha=1.0, weights='imagenet')
    with pytest.raises(backbones.WeightsUnavailableError) as error:
        backbones.resolve_weights(params)
    message = str(error.value)
    assert 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5' in message
    assert 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/' in message
    assert 'weights: /path/to/' in message and 'Name or service not known' in message


def test_sizes_without_published_weights_use_the_224_file():
    assert backbones.keras_imagenet_weights_name(0.35, 64).endswith('_0.35_224_no_top.h5')
    assert backbones.keras_imagenet_weights_name(1.0, 96).endswith('_1.0_96_no_top.h5')


def test_local_weights_file_is_loaded(tmp_path):
    params, source = build(3)
    path = str(tmp_path / 'base.h5')
    source.base.save_weights(path)
    loaded = backbones.build_base(TrainingConfig(**{**SMALL, 'weights': path}))
    for a, b in zip(source.base.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    _, other = build(3, alpha=0.5)
    path = str(tmp_path / 'alpha05.h5')
    other.base.save_weights(path)
    with pytest.raises(backbones.WeightsUnavailableError, match='could not be loaded into MobileNetV2'):
        backbones.build_base(TrainingConfig(**{**SMALL, 'weights': path}))
