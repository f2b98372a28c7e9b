"""The recipes: tutorial's numbers unchanged, auto's head chosen on validation, phase 2 keeping the best."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from components.trainer import model as model_lib
from components.trainer import recipe, training
from conftest import training_spec


def _clustered_features(seed: int, per_class: int = 40, classes: int = 3, size: int = 16, noise: float = 0.35):
    """Features of 3 clusters (well separated at the default noise): linearly separable, but
    only for a trained head."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 1.0, (classes, size))
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(0, noise, (len(labels), size))
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


def _datasets(batch_size=8):
    train = tf.data.Dataset.from_tensor_slices(_clustered_features(1)).shuffle(120, seed=0).batch(batch_size)
    validation = tf.data.Dataset.from_tensor_slices(_clustered_features(2, per_class=20)).batch(batch_size)
    return train, validation


def _head_functions(classes=3, size=16):
    return dict(build_head=lambda s: model_lib.build_candidate_head(s, classes, size),
                compile_head=lambda m, s: model_lib.compile_head(m, s, binary=False))


def _accuracy(spec, train, validation):
    tf_keras.utils.set_random_seed(spec.seed)
    head = model_lib.build_candidate_head(spec, 3, 16)
    model_lib.compile_head(head, spec, binary=False)
    head.fit(train, epochs=spec.head_epochs, verbose=0)
    return head.evaluate(validation, verbose=0)[1]


def test_auto_chooses_a_head_learning_rate_that_converges_where_the_tutorials_does_not():
    train, validation = _datasets()
    tutorial = training_spec(recipe='tutorial', head_epochs=3)
    assert tutorial.learning_rate == 1e-4
    tutorial_accuracy = _accuracy(tutorial, train, validation)

    auto = training_spec(recipe='auto')
    assert recipe.unchosen_head_keys(auto) == ['learning_rate', 'dropout', 'head_l2', 'head_epochs']
    chosen, candidates = recipe.choose_head(auto, train_features=train, validation_features=validation,
                                            **_head_functions())
    assert recipe.unchosen_head_keys(chosen) == []
    assert chosen.learning_rate > 1e-4
    best = min(candidates, key=lambda c: c.val_loss)
    assert (chosen.learning_rate, chosen.dropout, chosen.head_l2) == (best.learning_rate, best.dropout, best.head_l2)
    assert chosen.head_epochs == best.best_epoch
    # Every learning rate was tried with the tutorial's regularisation, then the regularisation.
    assert {c.learning_rate for c in candidates} == set(recipe.AUTO_LEARNING_RATES)
    assert {(c.dropout, c.head_l2) for c in candidates} >= set(recipe.AUTO_REGULARISATION)
    assert tutorial_accuracy < 0.7 <= 0.95 <= best.val_accuracy
    # A head trained with the chosen keys, as `recipe: tutorial` with them set would, converges too.
    assert _accuracy(chosen.model_copy(update=dict(recipe='tutorial')), train, validation) >= 0.95


def test_auto_keeps_the_keys_the_config_sets():
    train, validation = _datasets()
    spec = training_spec(recipe='auto', learning_rate=3e-3, dropout=0.1)
    chosen, candidates = recipe.choose_head(spec, train_features=train, validation_features=validation,
                                            **_head_functions())
    assert (chosen.learning_rate, chosen.dropout) == (3e-3, 0.1)
    assert {c.learning_rate for c in candidates} == {3e-3} and {c.dropout for c in candidates} == {0.1}
    assert chosen.head_l2 in {l2 for _, l2 in recipe.AUTO_REGULARISATION}
    assert recipe.choices_made(spec, chosen).keys() == {'head_l2', 'head_epochs'}


def test_auto_without_validation_images_says_so_and_uses_fixed_numbers(caplog):
    train, _ = _datasets()
    chosen, candidates = recipe.choose_head(training_spec(recipe='auto'), train_features=train,
                                            validation_features=None, **_head_functions())
    assert candidates == []
    assert chosen.learning_rate == recipe.AUTO_WITHOUT_VALIDATION['learning_rate']
    assert 'no validation images' in caplog.text


def _images(seed, count=24):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (count, 32, 32, 3)).astype(np.float32)
    labels = (images[..., 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (images[:, 0, 0, 1] > 0)
    return tf.data.Dataset.from_tensor_slices(({'image': images}, labels)).batch(8)


def test_fine_tuning_that_only_hurts_keeps_the_head_only_model(tmp_path):
    """Phase 2's early stopping counts the model phase 1 left as a candidate, and can keep it."""
    data = _images(4)
    spec = training_spec(head_epochs=3, fine_tune_epochs=4, learning_rate=1e-2, fine_tune_learning_rate=50.0,
                         fine_tune_optimizer='sgd', early_stopping_patience=2)
    classifier = model_lib.build_classifier(spec, 3)
    evaluated = {}

    def evaluate(phase):
        loss = classifier.model.evaluate(data, verbose=0)[0]
        evaluated[phase] = [w.copy() for w in classifier.model.get_weights()]
        return {'eval_loss': loss}

    state = training.train_two_phases(classifier, spec, data, data, training.TrainingCheckpoint(str(tmp_path)),
                                      evaluate_phase=evaluate, train_images=24)
    assert len(state.history['val_loss']) == 3 + 2  # stopped after `patience` epochs without improvement
    assert state.kept_head_only_model
    for kept, after_head in zip(classifier.model.get_weights(), evaluated['head'], strict=True):
        np.testing.assert_array_equal(kept, after_head)
    # The same weights as after phase 1: its evaluation is phase 2's, not run again.
    assert list(evaluated) == ['head']
    assert state.phase_metrics['fine-tuning']['eval_loss'] == state.phase_metrics['head']['eval_loss']


def test_fine_tuning_keeps_its_best_epoch(tmp_path):
    data = _images(5)
    spec = training_spec(head_epochs=1, fine_tune_epochs=4, learning_rate=1e-3, fine_tune_learning_rate=1e-2,
                         fine_tune_optimizer='adam', early_stopping_patience=4)
    classifier = model_lib.build_classifier(spec, 3)
    state = training.train_two_phases(
        classifier, spec, data, data, training.TrainingCheckpoint(str(tmp_path)), train_images=24,
        evaluate_phase=lambda phase: {'eval_loss': classifier.model.evaluate(data, verbose=0)[0]})
    fine_tune_losses = state.history['val_loss'][1:]
    assert not state.kept_head_only_model
    assert classifier.model.evaluate(data, verbose=0)[0] == pytest.approx(min(fine_tune_losses), rel=1e-4)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    spec = training_spec(fine_tune_epochs=4, fine_tune_learning_rate=1e-3, fine_tune_schedule='cosine',
                         fine_tune_warmup_epochs=1)
    schedule = model_lib.fine_tune_learning_rate(spec, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert rates[0] == pytest.approx(0.0) and rates[1] == pytest.approx(5e-4)
    assert rates[2] == pytest.approx(1e-3) and 0 < rates[3] < 1e-3 and rates[4] == pytest.approx(0.0, abs=1e-9)
    assert model_lib.fine_tune_learning_rate(training_spec(recipe='tutorial'), 10) == pytest.approx(1e-5)


def test_training_refuses_a_spec_no_recipe_has_resolved(tmp_path):
    spec = training_spec(recipe='auto')  # the head's keys are still unset
    classifier_spec = spec.model_copy(update=dict(dropout=0.2, head_l2=0.0))
    classifier = model_lib.build_classifier(classifier_spec, 3)
    with pytest.raises(ValueError, match='has not chosen learning_rate, dropout, head_l2, head_epochs'):
        training.train_two_phases(classifier, spec, _images(6), _images(6),
                                  training.TrainingCheckpoint(str(tmp_path)))


def test_auto_chooses_no_augmentation_when_augmented_images_mislead_the_head():
    train, validation = _datasets()
    features, labels = _clustered_features(1)
    spec = training_spec(recipe='auto', learning_rate=1e-2, dropout=0.2, head_l2=0.0, head_epochs=5,
                         augmentation='auto')
    loss = recipe.head_validation_loss(spec, (train, validation), None, **_head_functions())
    rng = np.random.default_rng(3)
    asked = []

    def misleading(candidate):  # "rotated" images whose features look like another class
        asked.append(candidate)
        return np.roll(features, 1, axis=0) + rng.normal(0, 0.35, features.shape).astype(np.float32)

    chosen, trials = recipe.choose_augmentation(spec, train_features=(features, labels), validation_features=validation,
                                                augmented_features=misleading, without_augmentation_loss=loss,
                                                **_head_functions())
    assert asked == [c for c in recipe.AUTO_AUGMENTATIONS if c is not None]
    assert chosen.augmentation is None and trials[0]['augmentation'] is None
    assert all(t['val_loss'] > loss for t in trials[1:])
    assert recipe.choices_made(spec, chosen)['augmentation'] is False


def test_auto_chooses_an_augmentation_whose_images_help_the_head():
    """Few, noisy training images: more of the same kind (what a fitting augmentation gives) help."""
    features, labels = _clustered_features(1, per_class=4, noise=1.2)
    train = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    validation = tf.data.Dataset.from_tensor_slices(_clustered_features(2, per_class=40, noise=1.2)).batch(8)
    spec = training_spec(recipe='auto', learning_rate=1e-2, dropout=0.2, head_l2=0.0, head_epochs=5,
                         augmentation='auto')
    loss = recipe.head_validation_loss(spec, (train, validation), None, **_head_functions())
    seeds = iter(range(10, 20))

    def helpful(candidate):
        rng = np.random.default_rng(next(seeds))
        centres = np.random.default_rng(0).normal(0, 1.0, (3, 16))
        return (centres[labels] + rng.normal(0, 1.2, features.shape)).astype(np.float32)

    chosen, trials = recipe.choose_augmentation(spec, train_features=(features, labels), validation_features=validation,
                                                augmented_features=helpful, without_augmentation_loss=loss,
                                                **_head_functions())
    assert chosen.augmentation is not None
    best = min(trials, key=lambda t: t['val_loss'])
    assert best['val_loss'] < loss and chosen.augmentation.model_dump() == best['augmentation']


def test_phase_one_takes_the_head_auto_chose_without_training_it_again(tmp_path):
    data = _images(8)
    spec = training_spec(recipe='auto', learning_rate=1e-2, dropout=0.2, head_l2=0.0, head_epochs=3,
                         fine_tune_epochs=0)
    classifier = model_lib.build_classifier(spec, 3)
    size = classifier.features.output_shape[-1]
    chosen = model_lib.build_candidate_head(spec, 3, size)
    chosen_weights = [np.random.default_rng(i).normal(size=w.shape).astype(np.float32)
                      for i, w in enumerate(chosen.get_weights())]
    history = {'loss': [1.0, 0.9, 0.8], 'accuracy': [0.3, 0.4, 0.5], 'val_loss': [1.1, 1.0, 0.95],
               'val_accuracy': [0.3, 0.3, 0.4]}
    state = training.train_two_phases(classifier, spec, data, data, training.TrainingCheckpoint(str(tmp_path)),
                                      trained_head=(chosen_weights, history), train_images=24)
    assert state.history == history and state.epochs_done == 3 and state.completed_phases == ['head']
    for kept, given in zip(model_lib.build_head_model(classifier).get_weights(), chosen_weights, strict=True):
        np.testing.assert_array_equal(kept, given)


def test_keep_best_by_validation_accuracy_breaks_ties_by_loss_and_counts_the_start(tmp_path):
    """auto keeps the phase-2 epoch of the best validation accuracy (the head-only model's
    included), a lower loss deciding between equal accuracies; patience counts from it."""
    from components.trainer.training import TrainingState, _KeepBest
    classifier = model_lib.build_classifier(training_spec(), 3)
    state = TrainingState(epochs_done=4)
    keep = _KeepBest(2, 'val_accuracy', training.TrainingCheckpoint(str(tmp_path)), state, training.FINE_TUNE,
                     classifier.model, start={'val_loss': 0.40, 'val_accuracy': 0.80})
    keep.set_model(classifier.model)
    epochs = [(0.45, 0.80), (0.41, 0.82), (0.50, 0.82), (0.39, 0.82)]  # (val_loss, val_accuracy)
    for epoch, (loss, accuracy) in enumerate(epochs, start=4):
        keep.on_epoch_end(epoch, {'val_loss': loss, 'val_accuracy': accuracy})
    # Epoch 5 loses to the start on loss at equal accuracy; 6 wins on accuracy although its loss is
    # higher than the start's; 7 ties 6 on accuracy with a higher loss; 8 ties with a lower loss.
    assert (state.best['epoch'], state.best['val_accuracy'], state.best['val_loss']) == (8, 0.82, 0.39)
    assert not classifier.model.stop_training and not keep.kept_start_weights

    by_loss = TrainingState(epochs_done=4)
    keep = _KeepBest(2, 'val_loss', training.TrainingCheckpoint(str(tmp_path / 'loss')), by_loss, training.FINE_TUNE,
                     classifier.model, start={'val_loss': 0.40, 'val_accuracy': 0.80})
    keep.set_model(classifier.model)
    for epoch, (loss, accuracy) in enumerate(epochs[:2], start=4):
        keep.on_epoch_end(epoch, {'val_loss': loss, 'val_accuracy': accuracy})
    assert classifier.model.stop_training and keep.kept_start_weights  # 2 epochs without a lower loss
