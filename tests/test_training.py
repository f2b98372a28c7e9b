"""The recipe: class weights, augmentation in training only, resuming, determinism, early stopping."""
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
import tf_keras

from components.trainer import model as model_lib
from components.trainer import training
from conftest import training_spec

SCRIPT = Path(__file__).with_name('training_run.py')


def test_class_weights_balance_the_training_counts():
    weights = training.class_weights(np.array([10, 30, 60]))
    assert weights == pytest.approx({0: 100 / 30, 1: 100 / 90, 2: 100 / 180})
    # Each class now weighs the same in total: count * weight is constant.
    assert {round(n * weights[c], 6) for c, n in enumerate([10, 30, 60])} == {round(100 / 3, 6)}
    with pytest.raises(ValueError, match=r'class indices \[1\] have no training image'):
        training.class_weights(np.array([5, 0, 3]))


def test_augmentation_acts_in_training_only():
    spec = training_spec(augmentation={'rotation': 0.2, 'zoom': 0.1, 'contrast': 0.2})
    plain = training_spec()
    bases = model_lib.build_bases(plain)
    augmented = model_lib.build_classifier(spec, 3, bases=bases).model
    reference = model_lib.build_classifier(plain, 3, bases=bases).model
    reference.set_weights(augmented.get_weights())
    images = {'image': tf.random.uniform((4, 32, 32, 3), -1, 1, seed=2)}
    features = tf_keras.Model(augmented.inputs, augmented.get_layer('augmentation').output['image'])
    assert not np.allclose(features(images, training=True), images['image'])
    np.testing.assert_array_equal(features(images, training=False), images['image'])
    np.testing.assert_allclose(augmented(images, training=False), reference(images, training=False), rtol=1e-5)


def _run(checkpoint, out, *flags):
    return subprocess.Popen([sys.executable, str(SCRIPT), str(checkpoint), str(out), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    checkpoint = tmp_path / 'checkpoint'
    first = _run(checkpoint, tmp_path / 'first.json', '--slow')
    state_file = checkpoint / 'state.json'
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until fine-tuning has finished one epoch (3 of 5)
        if state_file.exists() and json.loads(state_file.read_text())['epochs_done'] >= 3:
            break
        assert first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = json.loads(state_file.read_text())
    assert before['completed_phases'] == ['head'] and before['phase'] == 'fine-tuning'

    second = _run(checkpoint, tmp_path / 'second.json')
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    assert 'Resuming an interrupted training run from its checkpoint' in output
    result = json.loads((tmp_path / 'second.json').read_text())
    assert result['resumed_from_epoch'] == before['epochs_done']
    assert result['completed_phases'] == ['head', 'fine-tuning']
    assert result['fine_tune_start_epoch'] == 2
    history = result['history']['loss']
    assert len(history) == 5  # 2 + 3 epochs in all, not 5 more
    assert history[:before['epochs_done']] == before['history']['loss']  # the killed run's epochs, kept
    assert f"epoch {before['epochs_done'] + 1}/5 (fine-tuning)" in output
    assert 'epoch 1/5' not in output  # nothing was trained again
    assert 'Inconsistent references' not in output and 'not all checkpointed values were used' not in output


def test_deterministic_mode_gives_identical_metrics(tmp_path):
    histories = []
    for run in ('a', 'b'):
        process = _run(tmp_path / f'checkpoint-{run}', tmp_path / f'{run}.json', '--deterministic')
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        histories.append(json.loads((tmp_path / f'{run}.json').read_text())['history'])
    assert histories[0] == histories[1]
    assert len(histories[0]['loss']) == 5


def test_early_stopping_keeps_the_best_weights(tmp_path):
    spec = training_spec(head_epochs=8, fine_tune_epochs=0, learning_rate=30.0, head_optimizer='sgd',
                         early_stopping_patience=1)
    classifier = model_lib.build_classifier(spec, 3)
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (32, 32, 32, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(({'image': images}, rng.integers(0, 3, 32))).batch(8)
    state = training.train_two_phases(classifier, spec, data, data, training.TrainingCheckpoint(str(tmp_path)))
    losses = state.history['val_loss']
    assert len(losses) < 8  # stopped early: a learning rate of 30 makes the loss diverge
    final_loss = classifier.model.evaluate(data, verbose=0)[0]
    assert final_loss == pytest.approx(min(losses), rel=1e-4)  # the best epoch's weights, restored


def test_head_trained_on_cached_features_is_the_classifiers_head(tmp_path):
    spec = training_spec(head_epochs=3, fine_tune_epochs=0, learning_rate=1e-2)
    classifier = model_lib.build_classifier(spec, 3)
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (24, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 24)
    data = tf.data.Dataset.from_tensor_slices(({'image': images}, labels)).batch(8)
    features = classifier.features({'image': images}, training=False).numpy()
    cached = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    base_before = [w.numpy().copy() for w in classifier.bases['image'].weights]
    head_before = classifier.model.get_layer('logits').get_weights()[0].copy()
    state = training.train_two_phases(classifier, spec, data, data, training.TrainingCheckpoint(str(tmp_path)),
                                      head_features=(cached, cached), train_images=24)
    assert not np.array_equal(classifier.model.get_layer('logits').get_weights()[0], head_before)
    for before, after in zip(base_before, classifier.bases['image'].weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())  # the backbone never trained
    # The whole classifier scores what the head scored on the cached features in the last epoch.
    loss, accuracy = classifier.model.evaluate(data, verbose=0)
    assert loss == pytest.approx(state.history['val_loss'][-1], rel=1e-4)
    assert accuracy == pytest.approx(state.history['val_accuracy'][-1])
    assert state.phase_metrics['head']['images_per_second'] > 0


def test_phase_one_validates_on_cached_features_as_keras_would(tmp_path):
    """With augmentation on, validation uses features computed once; the metrics are Keras' own."""
    spec = training_spec(head_epochs=2, fine_tune_epochs=0, learning_rate=1e-2, early_stopping_patience=1)
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (24, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 24)
    data = tf.data.Dataset.from_tensor_slices(({'image': images}, labels)).batch(8)
    histories = []
    for cached in (False, True):
        tf_keras.utils.set_random_seed(5)
        classifier = model_lib.build_classifier(spec, 3)
        features = classifier.features({'image': images}, training=False).numpy()
        validation_features = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8) if cached else None
        state = training.train_two_phases(classifier, spec, data, data, training.TrainingCheckpoint(
            str(tmp_path / str(cached))), validation_features=validation_features)
        histories.append(state.history)
        loss, accuracy = classifier.model.evaluate(data, verbose=0)
        assert loss == pytest.approx(state.history['val_loss'][-1], rel=1e-4)  # logged for the right model
    plain, cached = histories
    assert len(cached['val_loss']) == 2
    np.testing.assert_allclose(cached['val_loss'], plain['val_loss'], rtol=1e-4)
    np.testing.assert_allclose(cached['val_accuracy'], plain['val_accuracy'])


def test_phase_one_is_evaluated_on_its_features_as_on_the_images(tmp_path):
    """After phase 1 the model is the head on the frozen backbones: evaluating the head on the
    eval and test splits' features gives the whole classifier's figures on their images."""
    from components.trainer.image_trainer import _PhaseEvaluation
    spec = training_spec(head_epochs=2, fine_tune_epochs=0, learning_rate=1e-2)
    rng = np.random.default_rng(4)
    splits = {split: (rng.uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32), rng.integers(0, 3, n))
              for split, n in (('train', 24), ('eval', 13), ('test', 11))}

    class Splits:  # what _PhaseEvaluation reads of TrainerData
        def dataset(self, split):
            images, labels = splits[split]
            return tf.data.Dataset.from_tensor_slices(({'image': images}, labels)).batch(8)

    classifier = model_lib.build_classifier(spec, 3)
    training.train_two_phases(classifier, spec, Splits().dataset('train'), Splits().dataset('eval'),
                              training.TrainingCheckpoint(str(tmp_path)))
    counts = {split: np.bincount(labels, minlength=3) for split, (_, labels) in splits.items()}
    features = {split: (classifier.features({'image': splits[split][0]}, training=False).numpy(), splits[split][1])
                for split in ('eval', 'test')}
    on_images = _PhaseEvaluation(classifier, Splits(), counts, spec)
    on_features = _PhaseEvaluation(classifier, Splits(), counts, spec, features)
    from_images, from_features = on_images(training.HEAD), on_features(training.HEAD)
    assert set(from_features) == {'eval_accuracy', 'eval_loss', 'test_accuracy', 'test_loss'}
    for key, value in from_images.items():
        assert from_features[key] == pytest.approx(value, rel=1e-5), key
    np.testing.assert_allclose(on_features.test_labels_and_probabilities()[1],
                               on_images.test_labels_and_probabilities()[1], rtol=1e-5, atol=1e-6)
    # Phase 2's model is no longer the head on those features: evaluated on the images.
    assert on_features(training.FINE_TUNE) == pytest.approx(from_images, rel=1e-5)


def test_the_frozen_bottom_is_cut_where_one_tensor_carries_it():
    """MobileNetV2's default fine_tune_at (100) is inside a residual block: the cut moves down to
    the block's start (98), and the bottom then the top compute what the backbone computes."""
    from components.trainer import frozen_bottom
    spec = training_spec()
    base = model_lib.build_bases(spec)['image']
    k, tensor = frozen_bottom.find_cut(base, 100)
    assert (k, base.layers[k].name) == (98, 'block_11_expand')
    assert frozen_bottom.find_cut(base, 150)[0] == 150  # between two blocks: the cut is fine_tune_at
    bottom, top = tf_keras.Model(base.inputs, tensor), tf_keras.Model(tensor, base.outputs)
    images = np.random.default_rng(5).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(top(bottom(images, training=False), training=False),
                               base(images, training=False), rtol=1e-5, atol=1e-6)


def _fine_tuned(tmp_path, with_frozen_bottom: bool, **spec_overrides):
    """A classifier trained one epoch of head (on features) and two of fine-tuning on the same
    tiny images: phase 2 on them, or above the frozen bottoms' outputs computed once. Returns (classifier,
    state, the FrozenBottom or None)."""
    from components.trainer import data as data_lib
    from components.trainer.frozen_bottom import FrozenBottom
    spec = training_spec(head_epochs=1, fine_tune_epochs=2, learning_rate=1e-2, fine_tune_learning_rate=1e-4,
                         batch_size=8, **spec_overrides)
    rng = np.random.default_rng(6)
    splits = {split: (rng.uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32), rng.integers(0, 3, n))
              for split, n in (('train', 20), ('eval', 11))}

    def dataset(split, shuffle=False):
        images, labels = splits[split]
        examples = tf.data.Dataset.from_tensor_slices(({'image': images}, labels))
        return data_lib.batched(examples, spec, len(labels), shuffle)

    tf_keras.utils.set_random_seed(spec.seed)
    bases = model_lib.build_bases(spec)
    # The random backbone's features standardised, as the Trainer does (else they are ~1e-12).
    stats = model_lib.feature_statistics(model_lib.build_feature_extractor(spec, bases), {'image': splits['train'][0]})
    classifier = model_lib.build_classifier(spec, 3, bases=bases, feature_stats=stats)
    bottom, fine_tune_on = None, None
    if with_frozen_bottom:
        bottom = FrozenBottom.plan(spec, classifier.bases, images=31)
        for split, (images, labels) in splits.items():
            _, *outputs = bottom.extractor()({'image': images}, training=False)
            bottom.add(split, [output.numpy() for output in outputs], labels)
        fine_tune_on = (bottom.model(classifier), bottom.dataset('train', shuffle=True), bottom.dataset('eval'))
    # Phase 1 on features, as in the Trainer: the shuffled images are first read in phase 2.
    features = {split: data_lib.features_dataset(classifier.features({'image': images}, training=False).numpy(),
                                                 labels, spec, shuffle=split == 'train')
                for split, (images, labels) in splits.items()}
    state = training.train_two_phases(classifier, spec, dataset('train', shuffle=True), dataset('eval'),
                                      training.TrainingCheckpoint(str(tmp_path / str(with_frozen_bottom))),
                                      head_features=(features['train'], features['eval']), train_images=20,
                                      fine_tune_on=fine_tune_on)
    return classifier, state, bottom


def test_fine_tuning_above_the_frozen_bottoms_trains_the_same_model(tmp_path):
    """Phase 2 on the frozen bottoms' outputs, computed once, gives the weights and figures of
    phase 2 on the images: same batches, same layers, only the frozen work is not repeated."""
    on_images, images_state, _ = _fine_tuned(tmp_path, with_frozen_bottom=False)
    above, above_state, bottom = _fine_tuned(tmp_path, with_frozen_bottom=True)
    assert bottom is not None
    tf_keras.utils.set_random_seed(training_spec().seed)
    initial = model_lib.build_bases(training_spec())['image']  # as _fine_tuned built it
    fine_tuned = [layer for layer in on_images.bases['image'].layers[100:] if layer.trainable_weights]
    assert fine_tuned and all(  # phase 2 moved every top layer well beyond the tolerance below
        np.abs(layer.get_weights()[0] - initial.get_layer(layer.name).get_weights()[0]).max() > 1e-4
        for layer in fine_tuned)
    for mine, theirs in zip(above.model.weights, on_images.model.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5, err_msg=mine.name)
    for key in ('loss', 'val_loss', 'accuracy', 'val_accuracy'):
        np.testing.assert_allclose(above_state.history[key], images_state.history[key], rtol=1e-4, err_msg=key)


def test_no_frozen_bottom_when_its_outputs_exceed_the_memory_limit(caplog):
    from components.trainer.frozen_bottom import FrozenBottom
    spec = training_spec(input_cache_max_gb=1e-6)
    with caplog.at_level('INFO'):
        assert FrozenBottom.plan(spec, model_lib.build_bases(spec), images=1000) is None
    assert 'Phase 2 runs on the images' in caplog.text and 'input_cache_max_gb' in caplog.text
    assert FrozenBottom.plan(training_spec(), model_lib.build_bases(spec), images=1000) is not None
