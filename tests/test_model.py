"""The classifier: head shape, frozen and fine-tuned parameters, BatchNorm, weights handling."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components.trainer import backbones
from components.trainer import model as model_lib
from conftest import backbone_spec, training_spec


def build(num_classes, **backbone_overrides):
    spec = training_spec([backbone_spec(**backbone_overrides)])
    return spec, model_lib.build_classifier(spec, num_classes)


def only_base(classifier):
    [base] = classifier.bases.values()
    return base


@pytest.mark.parametrize('num_classes,logits', [(2, 1), (5, 5)])
def test_head_and_outputs(num_classes, logits):
    _, classifier = build(num_classes)
    layer_types = [type(layer).__name__ for layer in classifier.model.layers]
    assert layer_types == ['InputLayer', 'Functional', 'GlobalAveragePooling2D', 'Dropout', 'Dense']
    assert classifier.model.input_names == ['image']
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
    expected = sum(int(np.prod(w.shape)) for layer in only_base(classifier).layers[100:]
                   for w in layer.trainable_weights)
    trainable_ft, frozen_ft = model_lib.trainable_counts(classifier.model)
    assert trainable_ft == head_params + expected
    assert trainable + frozen == trainable_ft + frozen_ft
    assert all(not layer.trainable for layer in only_base(classifier).layers[:100])
    assert isinstance(classifier.model.optimizer, tf_keras.optimizers.RMSprop)
    assert classifier.model.optimizer.learning_rate.numpy() == pytest.approx(1e-5)


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory):
    """A weights file, so the model counts as pretrained (weights is a path, not none)."""
    path = str(tmp_path_factory.mktemp('weights') / 'base.h5')
    backbones.build_base(backbone_spec()).save_weights(path)
    return path


def test_batchnorm_stays_in_inference_mode_while_fine_tuning(weights_file):
    params, classifier = build(3, fine_tune_at=100, weights=weights_file)
    model_lib.compile_for_fine_tuning(classifier, params)
    bn = [layer for layer in only_base(classifier).layers[100:]
          if isinstance(layer, tf_keras.layers.BatchNormalization)][0]
    assert bn.trainable  # unfrozen, so its gamma/beta train...
    before = bn.moving_mean.numpy().copy()
    images = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    classifier.model.fit(images, np.array([0, 1, 2, 0, 1, 2, 0, 1]), epochs=1, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)  # ...but its statistics do not move


def test_random_base_keeps_batchnorm_frozen_while_fine_tuning():
    """With weights: none the head standardises ~1e-12 features; a moving BatchNorm beta would
    add offsets a trillion times larger than the signal (the loss went to 3e8 before this)."""
    params, classifier = build(3, fine_tune_at=100)
    model_lib.compile_for_fine_tuning(classifier, params)
    unfrozen = only_base(classifier).layers[100:]
    assert all(not layer.trainable for layer in unfrozen
               if isinstance(layer, tf_keras.layers.BatchNormalization))
    assert any(layer.trainable for layer in unfrozen if isinstance(layer, tf_keras.layers.Conv2D))


@pytest.mark.parametrize('fine_tune_at,start', [(100, 100), (0.5, 77), ('block_16_expand', 143)])
def test_fine_tune_at_is_an_index_a_fraction_or_a_layer_name(fine_tune_at, start):
    spec, classifier = build(3, fine_tune_at=fine_tune_at)
    model_lib.unfreeze_for_fine_tuning(classifier)
    layers = only_base(classifier).layers
    assert not layers[start - 1].trainable and layers[start].trainable


def test_unknown_fine_tune_layer_is_named():
    with pytest.raises(ValueError, match="has no layer 'block_99_expand'; similar: block_1_expand"):
        build(3, fine_tune_at='block_99_expand')


def test_random_base_features_are_standardised_before_the_head():
    spec = training_spec()
    bases = model_lib.build_bases(spec)
    images = {'image': tf.random.uniform((64, 32, 32, 3), -1, 1, seed=1)}
    extractor = model_lib.build_feature_extractor(spec, bases)
    raw = extractor(images).numpy()
    alive = raw.std(axis=0) > 0
    assert np.median(raw.std(axis=0)[alive]) < 1e-6  # what a random base gives: nearly nothing
    classifier = model_lib.build_classifier(spec, 3, bases=bases,
                                            feature_stats=model_lib.feature_statistics(extractor, images))
    standardize = classifier.model.get_layer('standardize_features')
    pooled = tf_keras.Model(classifier.model.input, standardize.output)(images).numpy()
    np.testing.assert_allclose(pooled.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(pooled.std(axis=0)[alive], 1, rtol=1e-2)
    np.testing.assert_array_equal(pooled[:, ~alive], 0)  # dead features stay 0, no division by 0


def test_imagenet_weights_offline_fail_with_instructions(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception('URL fetch failure: [Errno -2] Name or service not known')
    monkeypatch.setattr(tf_keras.utils, 'get_file', offline)
    with pytest.raises(backbones.WeightsUnavailableError) as error:
        backbones.resolve_weights(backbone_spec(image_size=160, alpha=1.0, weights='imagenet'))
    message = str(error.value)
    assert 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5' in message
    assert 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/' in message
    assert 'weights: /path/to/' in message and 'Name or service not known' in message


def test_sizes_without_published_weights_use_the_224_file():
    url = backbones.MOBILENET_V2.imagenet_url
    assert url(backbone_spec(alpha=0.35, image_size=64)).endswith('_0.35_224_no_top.h5')
    assert url(backbone_spec(alpha=1.0, image_size=96)).endswith('_1.0_96_no_top.h5')


def test_local_weights_file_is_loaded(tmp_path):
    source = backbones.build_base(backbone_spec())
    path = str(tmp_path / 'base.h5')
    source.save_weights(path)
    loaded = backbones.build_base(backbone_spec(weights=path))
    for a, b in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = str(tmp_path / 'alpha05.h5')
    backbones.build_base(backbone_spec(alpha=0.5)).save_weights(path)
    with pytest.raises(backbones.WeightsUnavailableError, match='could not be loaded into mobilenet_v2'):
        backbones.build_base(backbone_spec(weights=path))
