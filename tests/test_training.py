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
