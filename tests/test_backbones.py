"""The backbone registry, the head that follows it, ensembles and `describe`."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components.trainer import backbones
from components.trainer import serving
from components.trainer import model as model_lib
from components.transform.image_decoding import decode_image
from conftest import backbone_spec, image_bytes, training_spec, transform_output
from pipeline import describe
from components.trainer.spec import BackboneSpec
from pipeline.config import load_config

SMALLEST = {'mobilenet_v2': 32, 'resnet50': 32, 'inception_v3': 75, 'vgg16': 32, 'efficientnet_b0': 32}


@pytest.mark.parametrize('name', sorted(SMALLEST))
def test_every_keras_backbone_builds_pools_and_fine_tunes(name):
    spec = training_spec([backbone_spec(name=name, image_size=SMALLEST[name])])
    classifier = model_lib.build_classifier(spec, 3)
    [base] = classifier.bases.values()
    facts = backbones.get(name)
    assert len(base.layers) == facts.num_layers
    assert backbones.output_is_feature_map(base)  # (N, h, w, C): the head must pool it
    assert model_lib.pooling_decision('auto', True, name)[0] == 'gap'
    channels = base.output_shape[-1]
    model_lib.freeze_for_head(classifier)
    assert model_lib.trainable_counts(classifier.model)[0] == channels * 3 + 3  # the head only
    model_lib.unfreeze_for_fine_tuning(classifier)
    start = backbones.fine_tune_index(base, spec.backbones[0].effective_fine_tune_at)
    unfrozen = sum(int(np.prod(w.shape)) for layer in base.layers[start:] for w in layer.trainable_weights)
    assert 0 < unfrozen < base.count_params()
    assert model_lib.trainable_counts(classifier.model)[0] == channels * 3 + 3 + unfrozen


@pytest.mark.parametrize('name', sorted(SMALLEST))
def test_preprocessing_matches_the_backbones_own_keras_function(name):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    ours = backbones.get(name).preprocess(tf.constant(pixels)).numpy()
    keras = backbones.keras_preprocess_input(name)(pixels.copy())
    np.testing.assert_allclose(ours, keras, rtol=1e-5, atol=1e-4)


def test_a_size_without_pretrained_weights_is_a_warning_naming_the_sizes():
    assert backbones.size_warning(backbone_spec(image_size=160, weights='imagenet')) is None
    message = backbones.size_warning(backbone_spec(name='resnet50', image_size=160, weights='imagenet'))
    assert 'trained at 224 px, not 160' in message
    assert backbones.size_warning(backbone_spec(name='resnet50', image_size=160, weights='none')) is None


def _save_hub_model(path: str, pooled: bool) -> None:
    """A tiny model in TF-Hub's reusable SavedModel format: [N, h, w, 3] in [0, 1] -> features,
    with `variables` and `trainable_variables` saved so it can be fine-tuned."""
    root = tf.train.Checkpoint()
    root.kernel = tf.Variable(tf.random.normal([3, 3, 3, 8], seed=1), name='kernel')
    root.variables = [root.kernel]
    root.trainable_variables = [root.kernel]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def call(images):
        maps = tf.nn.relu(tf.nn.conv2d(images, root.kernel, 2, 'SAME'))
        return tf.reduce_mean(maps, axis=[1, 2]) if pooled else maps

    root.__call__ = call
    tf.saved_model.save(root, path)


@pytest.fixture(scope='module')
def hub_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp('hub')
    paths = {kind: str(folder / kind) for kind in ('vector', 'feature_map')}
    _save_hub_model(paths['vector'], pooled=True)
    _save_hub_model(paths['feature_map'], pooled=False)
    return paths


def test_hub_feature_vector_gets_no_pooling_and_refuses_one(hub_models):
    spec = training_spec([BackboneSpec(name='hub', hub_handle=hub_models['vector'], image_size=32)])
    classifier = model_lib.build_classifier(spec, 3)
    [base] = classifier.bases.values()
    assert base.output_shape == (None, 8) and not backbones.output_is_feature_map(base)
    assert not any(isinstance(layer, tf_keras.layers.GlobalAveragePooling2D) for layer in classifier.model.layers)
    with pytest.raises(ValueError, match=r'already a pooled vector \(N, C\): flatten turns a feature map'):
        model_lib.build_classifier(training_spec(spec.backbones, head='flatten'), 3)
    model_lib.unfreeze_for_fine_tuning(classifier)  # a hub module fine-tunes as a whole
    assert model_lib.trainable_counts(classifier.model)[0] == 3 * 3 * 3 * 8 + 8 * 3 + 3


def test_hub_feature_map_is_pooled(hub_models):
    spec = training_spec([BackboneSpec(name='hub', hub_handle=hub_models['feature_map'], image_size=32)])
    classifier = model_lib.build_classifier(spec, 3)
    assert any(isinstance(layer, tf_keras.layers.GlobalAveragePooling2D) for layer in classifier.model.layers)


def test_missing_hub_model_is_a_clear_error(tmp_path):
    with pytest.raises(backbones.WeightsUnavailableError, match="hub_handle .* could not be loaded"):
        backbones.build_base(BackboneSpec(name='hub', hub_handle=str(tmp_path / 'nothing'), image_size=32))


def test_ensemble_runs_backbones_side_by_side_trains_and_serves_raw_bytes(tmp_path):
    spec = training_spec([backbone_spec(key='image_0_mobilenet_v2', image_size=32),
                          backbone_spec(name='vgg16', key='image_1_vgg16', image_size=40)],
                         augmentation={'rotation': 0.1})
    classifier = model_lib.build_classifier(spec, 3)
    model = classifier.model
    assert sorted(model.input_names) == ['image_0_mobilenet_v2', 'image_1_vgg16']
    assert model.get_layer('concatenate').output_shape == (None, 1280 + 512)
    # Parallel, not chained: each backbone's input is its own model input (through augmentation).
    for key, base in classifier.bases.items():
        assert base.name.startswith(key)
    model_lib.compile_for_fine_tuning(classifier, spec)
    inputs = {'image_0_mobilenet_v2': np.zeros((4, 32, 32, 3), np.float32),
              'image_1_vgg16': np.zeros((4, 40, 40, 3), np.float32)}
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(inputs, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights, strict=True))

    serving.export(model, transform_output(spec, tmp_path), ['a', 'b', 'c'], str(tmp_path / 'model'), spec.backbones)
    loaded = tf.saved_model.load(str(tmp_path / 'model'))
    served = loaded.signatures['serving_default']
    encoded = [image_bytes((200, 10, 10), fmt='JPEG'), image_bytes((1, 2, 3))]
    out = served(image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(out['probabilities'].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert set(n.decode() for n in out['class_name'].numpy()) <= {'a', 'b', 'c'}
    # from_pixels takes the largest size and resizes for the smaller backbone inside.
    pixels_fn = loaded.signatures[serving.PIXELS_SIGNATURE]
    assert pixels_fn.structured_input_signature[1]['pixels'].shape.as_list() == [None, 40, 40, 3]
    pixels = tf.stack([decode_image(tf.constant(e), 40, (255.0, 255.0, 255.0), 'squash') for e in encoded])
    from_pixels = pixels_fn(pixels=pixels)['probabilities'].numpy()
    np.testing.assert_allclose(from_pixels.sum(axis=1), 1.0, rtol=1e-5)
    assert from_pixels.shape == (2, 3)


def test_shared_augmentation_moves_every_view_alike():
    from components.trainer.augmentation import SharedAugmentation
    image = np.zeros((1, 16, 16, 3), np.float32)
    image[:, :, :4] = 1.0  # a bright band on the left
    big = tf.image.resize(image, [32, 32]).numpy()
    layer = SharedAugmentation(flip=True, rotation=0.0, seed=3)
    flipped = None
    for _ in range(20):  # until the random flip fires
        out = layer({'small': image, 'big': big}, training=True)
        small_left = out['small'][0, :, :4].numpy().mean()
        big_left = out['big'][0, :, :8].numpy().mean()
        assert (small_left > 0.5) == (big_left > 0.5)  # both flipped or neither
        flipped = flipped or small_left < 0.5
    assert flipped
    same = layer({'small': image}, training=False)['small']
    np.testing.assert_array_equal(same, image)  # inference: untouched


def test_describe_explains_the_pooling_and_counts_both_phases(tmp_path, image_folder, hub_models):
    config_path = tmp_path / 'c.yaml'
    config_path.write_text(f'data_root: {image_folder}\noutput_dir: {tmp_path}/o\nweights: none\n'
                           f'backbones: [mobilenet_v2, {{name: hub, hub_handle: {hub_models["vector"]}}}]\n'
                           'image_size: 64\nalpha: 0.35\nhidden_units: [32]\n')
    text = describe.describe(load_config(config_path), ['cat', 'dog', 'fox'])
    assert 'Backbone 1 of 2: mobilenet_v2 (alpha 0.35)' in text
    assert 'output       (N, 2, 2, 1280), a feature map' in text
    assert 'pooling      GlobalAveragePooling2D -> (N, 1280), because its output is a feature map' in text
    assert 'output       (N, 8), an already pooled vector' in text
    assert 'pooling      none, because its output is already a pooled vector' in text
    assert 'Head: Concatenate -> (1288) -> standardisation' in text and 'Dense(32, relu)' in text
    assert 'Dense(3) logits' in text
    phase_lines = [line for line in text.splitlines() if line.strip().startswith('phase')]
    assert len(phase_lines) == 2
    head_trainable = int(phase_lines[0].split()[-2].replace(',', ''))
    assert head_trainable == 1288 * 32 + 32 + 32 * 3 + 3
