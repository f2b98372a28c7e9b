"""The two recipes: the numbers the Trainer uses for the keys a config leaves unset.

`tutorial` is TensorFlow's transfer-learning tutorial as it is: the head for 10 epochs with
Adam at 1e-4 on augmented images, then 10 epochs of fine-tuning with RMSprop at a tenth of
that, dropout 0.2, every epoch trained.

`auto` keeps the same shape (frozen backbone + head, then the top of the backbone fine-tuned,
BatchNorm in inference mode) and chooses its numbers:
- phase 1 trains the head on backbone features of the training images computed once, which
  makes an epoch cost a fraction of a second, so the head is trained to convergence: its
  learning rate, then its regularisation (dropout, L2), are chosen by the lowest validation
  loss, each candidate trained with early stopping; the best candidate, at its best epoch, is
  phase 1's result (choose_head);
- phase 2's augmentation is chosen between none and flips, by whether the flipped images'
  features help that head on the validation split (choose_augmentation);
- phase 2 fine-tunes for up to AUTO['fine_tune_epochs'] epochs with that augmentation, SGD
  with momentum 0.9, a linear warm-up to 1e-3 and a cosine decay to zero
  (bench/results/fine_tune_schedule.md: after a converged head, RMSprop's first steps undo
  what the head learnt and it never recovers within the budget, while SGD with momentum
  improves on the head), all of it, keeping the epoch of the best validation accuracy (ties
  broken by the loss), the head-only model included: if fine-tuning never beats it, the
  recipe keeps the phase-1 model and says so. Accuracy, not loss: a fine-tuned model's
  loss stays above that of the head, whose candidates were chosen by that same loss, long
  after its accuracy has passed it, and accuracy is what the gate measures.
Every choice is logged and written to the training summary as config keys, so that
`recipe: tutorial` with those keys set trains the same way.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import devices
from components.trainer.spec import RECIPE_CHOICES, AugmentationSpec, TrainingSpec

logger = logging.getLogger(__name__)

TUTORIAL = dict(learning_rate=1e-4, dropout=0.2, head_l2=0.0, head_epochs=10, fine_tune_epochs=10,
                fine_tune_optimizer='rmsprop', fine_tune_schedule='constant', fine_tune_warmup_epochs=0,
                head_on_features=False, augmentation=AugmentationSpec(), early_stopping_metric='val_loss')
# What auto fixes without looking at the data. fine_tune_epochs is a maximum (early stopping).
# Patience as long as phase 2: the whole cosine schedule runs, because its last, low-rate
# epochs are where fine-tuning pays (Fashion-MNIST: the warm-up and the two epochs after it
# were below the head, so patience 3 stopped there and kept the head); the best epoch is kept.
AUTO = dict(fine_tune_epochs=6, fine_tune_optimizer='sgd', fine_tune_learning_rate=1e-3, fine_tune_schedule='cosine',
            fine_tune_warmup_epochs=1, head_on_features=True, early_stopping_patience=6,
            early_stopping_metric='val_accuracy')
# Candidates for the head, trained on cached features: first the learning rate (with the
# tutorial's regularisation), then the regularisation at the best learning rate.
AUTO_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
AUTO_REGULARISATION = ((0.2, 0.0), (0.5, 0.0), (0.2, 1e-3), (0.5, 1e-3))  # (dropout, head_l2)
AUTO_HEAD_MAX_EPOCHS = 100
AUTO_HEAD_PATIENCE = 5
# Phase 2's augmentation, chosen by how a head trained on the features of un-augmented plus
# once-augmented training images does on the validation split: none or flips. The tutorial's
# flips with rotations of up to 0.2 turns were a candidate too until they lost to `none` in
# all six benchmark runs of bench/results/recipe.json (three sets; bcd086d and 4776eb6) while
# costing a backbone pass over the training images each time (6 s to 40 s here).
AUTO_AUGMENTATIONS = (None, AugmentationSpec(flip=True, rotation=0.0))
# Without a validation split nothing can be chosen on it: these are used instead.
AUTO_WITHOUT_VALIDATION = dict(learning_rate=1e-3, dropout=0.2, head_l2=0.0, head_epochs=20,
                               augmentation=AugmentationSpec())
HEAD_KEYS = ('learning_rate', 'dropout', 'head_l2', 'head_epochs')


def resolve(spec: TrainingSpec) -> TrainingSpec:
    """The spec with every unset key the recipe fixes without data filled in.

    For `auto`, the head's keys that are unset stay unset: choose_head fills them. Keys the
    config sets are never changed. early_stopping_patience unset means none in `tutorial`.
    """
    if spec.recipe == 'tutorial':
        choices = dict(TUTORIAL)
    else:
        choices = dict(AUTO)
    update = {key: value for key, value in choices.items() if spec.is_unset(key)}
    return spec.model_copy(update=update)


def unchosen_head_keys(spec: TrainingSpec) -> List[str]:
    """The head's keys still unset (choose_head's work); empty for tutorial or when all are set."""
    return [key for key in HEAD_KEYS if spec.is_unset(key)]


def missing(spec: TrainingSpec) -> List[str]:
    """Keys no recipe has filled yet; training needs none (early_stopping_patience may stay unset)."""
    return [key for key in RECIPE_CHOICES
            if key not in ('early_stopping_patience', 'fine_tune_learning_rate') and spec.is_unset(key)]


@dataclasses.dataclass
class HeadCandidate:
    """One head trained on cached features while choosing: its settings and what it scored."""
    learning_rate: float
    dropout: float
    head_l2: float
    val_loss: float = float('inf')
    val_accuracy: float = 0.0
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    # The trained head at its best epoch, and its history up to that epoch (not in as_dict).
    weights: Optional[List[np.ndarray]] = dataclasses.field(default=None, repr=False)
    history: Optional[Dict[str, List[float]]] = dataclasses.field(default=None, repr=False)

    def as_dict(self) -> Dict[str, float]:
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in ('weights', 'history')}


def choose_head(spec: TrainingSpec, build_head: Callable[[TrainingSpec], tf_keras.Model],
                compile_head: Callable[[tf_keras.Model, TrainingSpec], None],
                train_features: tf.data.Dataset, validation_features: Optional[tf.data.Dataset],
                class_weight: Optional[Dict[int, float]] = None) -> Tuple[TrainingSpec, List[HeadCandidate]]:
    """`auto`'s phase-1 numbers, chosen on the validation split's features.

    build_head(spec) returns a new head (feature vector -> logits) with spec's dropout and
    L2; compile_head(model, spec) compiles it with spec's optimizer and learning rate. Only
    the keys the config left unset are chosen: a set learning rate stays fixed while the
    regularisation is chosen, and so on. The best candidate keeps its trained weights (at its
    best epoch) and history: it is phase 1's result, not trained again.
    """
    unset = unchosen_head_keys(spec)
    if not unset:
        return spec, []
    if validation_features is None:
        chosen = {key: AUTO_WITHOUT_VALIDATION[key] for key in unset}
        logger.warning('recipe auto: no validation images, so nothing can be chosen on them; using %s',
                       ', '.join(f'{k} {v}' for k, v in chosen.items()))
        return spec.model_copy(update=chosen), []

    candidates: List[HeadCandidate] = []

    def trial(learning_rate: float, dropout: float, head_l2: float) -> HeadCandidate:
        for done in candidates:
            if (done.learning_rate, done.dropout, done.head_l2) == (learning_rate, dropout, head_l2):
                return done
        candidate = HeadCandidate(learning_rate, dropout, head_l2)
        trial_spec = spec.model_copy(update=dict(learning_rate=learning_rate, dropout=dropout, head_l2=head_l2))
        started = time.time()
        head, history = _fit_head(trial_spec, build_head, compile_head, train_features, validation_features,
                                  class_weight)
        best = int(np.argmin(history['val_loss']))
        candidate.val_loss = float(history['val_loss'][best])
        candidate.val_accuracy = float(history['val_accuracy'][best])
        candidate.best_epoch, candidate.epochs_run = best + 1, len(history['val_loss'])
        candidate.seconds = time.time() - started
        if all(candidate.val_loss < other.val_loss for other in candidates):  # the best so far: keep it
            for other in candidates:
                other.weights = other.history = None
            candidate.weights = head.get_weights()
            candidate.history = {key: [float(v) for v in values[:best + 1]] for key, values in history.items()}
        logger.info('recipe auto: head with learning_rate %g, dropout %g, head_l2 %g: best val_loss %.4f '
                    '(val_accuracy %.4f) at epoch %d of %d, %.1f s', learning_rate, dropout, head_l2,
                    candidate.val_loss, candidate.val_accuracy, candidate.best_epoch, candidate.epochs_run,
                    candidate.seconds)
        candidates.append(candidate)
        return candidate

    dropout = spec.dropout if spec.dropout is not None else TUTORIAL['dropout']
    head_l2 = spec.head_l2 if spec.head_l2 is not None else TUTORIAL['head_l2']
    rates = AUTO_LEARNING_RATES if spec.learning_rate is None else (spec.learning_rate,)
    best = min((trial(rate, dropout, head_l2) for rate in rates), key=lambda c: c.val_loss)
    regularisation = [(d if spec.dropout is None else spec.dropout, l2 if spec.head_l2 is None else spec.head_l2)
                      for d, l2 in AUTO_REGULARISATION]
    if spec.dropout is None or spec.head_l2 is None:
        best = min((trial(best.learning_rate, d, l2) for d, l2 in dict.fromkeys(regularisation)),
                   key=lambda c: c.val_loss)
    chosen = dict(learning_rate=best.learning_rate, dropout=best.dropout, head_l2=best.head_l2,
                  head_epochs=best.best_epoch)
    chosen = {key: chosen[key] for key in unset}
    logger.info('recipe auto chose for the head (lowest validation loss of %d candidates): %s', len(candidates),
                ', '.join(f'{k} {v:g}' for k, v in chosen.items()))
    return spec.model_copy(update=chosen), candidates


def head_validation_loss(spec: TrainingSpec, head_features: Tuple[tf.data.Dataset, tf.data.Dataset],
                         class_weight: Optional[Dict[int, float]], build_head: Callable[[TrainingSpec], tf_keras.Model],
                         compile_head: Callable[[tf_keras.Model, TrainingSpec], None]) -> float:
    """The best validation loss of a head with spec's settings trained on features (early stopping)."""
    _, history = _fit_head(spec, build_head, compile_head, *head_features, class_weight)
    return float(min(history['val_loss']))


def choose_augmentation(spec: TrainingSpec, build_head: Callable[[TrainingSpec], tf_keras.Model],
                        compile_head: Callable[[tf_keras.Model, TrainingSpec], None],
                        train_features: Tuple[np.ndarray, np.ndarray], validation_features: tf.data.Dataset,
                        augmented_features: Callable[[AugmentationSpec], np.ndarray],
                        without_augmentation_loss: float,
                        class_weight: Optional[Dict[int, float]] = None) -> Tuple[TrainingSpec, List[Dict]]:
    """`auto`'s phase-2 augmentation: the candidate whose augmented images help the head most.

    For each candidate, augmented_features(candidate) gives the features of one augmented pass
    over the training images (in the order of train_features); a head with spec's settings is
    trained on both passes with early stopping, and its best validation loss is compared with
    without_augmentation_loss (the same head on the un-augmented pass alone). An augmentation
    that makes the images unlike the validation ones (rotated clothes that are always upright)
    makes it worse.
    """
    if not spec.is_unset('augmentation'):
        return spec, []
    features, labels = train_features
    trials = [dict(augmentation=None, val_loss=float(without_augmentation_loss), seconds=0.0)]
    for candidate in AUTO_AUGMENTATIONS:
        if candidate is None:
            continue
        started = time.time()
        both = np.concatenate([features, augmented_features(candidate)]), np.concatenate([labels, labels])
        dataset = devices.replica_batches(tf.data.Dataset.from_tensor_slices(both).shuffle(len(both[1]), seed=spec.seed),
                                          spec.batch_size, len(both[1]), training=True)
        _, history = _fit_head(spec, build_head, compile_head, dataset, validation_features, class_weight)
        trials.append(dict(augmentation=candidate.model_dump(), val_loss=float(min(history['val_loss'])),
                           seconds=time.time() - started))
        logger.info('recipe auto: head on un-augmented + augmented (%s) features: best val_loss %.4f, %.1f s',
                    _describe_augmentation(candidate), trials[-1]['val_loss'], trials[-1]['seconds'])
    best = min(trials, key=lambda trial: trial['val_loss'])
    chosen = AugmentationSpec(**best['augmentation']) if best['augmentation'] else None
    logger.info('recipe auto chose for phase 2: augmentation %s (validation loss %.4f; without: %.4f)',
                _describe_augmentation(chosen), best['val_loss'], without_augmentation_loss)
    return spec.model_copy(update=dict(augmentation=chosen)), trials


def _describe_augmentation(augmentation: Optional[AugmentationSpec]) -> str:
    if augmentation is None:
        return 'none'
    return ', '.join(f'{k} {v}' for k, v in augmentation.model_dump().items() if v)


def _fit_head(spec: TrainingSpec, build_head: Callable[[TrainingSpec], tf_keras.Model],
              compile_head: Callable[[tf_keras.Model, TrainingSpec], None], train: tf.data.Dataset,
              validation: tf.data.Dataset, class_weight: Optional[Dict[int, float]]):
    """A new head with spec's settings (seeded), trained until the validation loss has not
    improved for AUTO_HEAD_PATIENCE epochs: (the head at its best epoch, its Keras history)."""
    tf_keras.utils.set_random_seed(spec.seed)
    head = build_head(spec)
    compile_head(head, spec)
    stop = tf_keras.callbacks.EarlyStopping(monitor='val_loss', patience=AUTO_HEAD_PATIENCE, restore_best_weights=True)
    history = head.fit(train, validation_data=validation, epochs=AUTO_HEAD_MAX_EPOCHS, class_weight=class_weight,
                       verbose=0, callbacks=[stop]).history
    return head, history


def choices_made(configured: TrainingSpec, resolved: TrainingSpec) -> Dict[str, object]:
    """The keys the recipe filled in, with their values (as config values): what `recipe:
    tutorial` needs to match."""
    choices = {}
    for key in RECIPE_CHOICES:
        if configured.is_unset(key) and not resolved.is_unset(key):
            value = getattr(resolved, key)
            if key == 'augmentation':
                value = value.model_dump() if value else False
            choices[key] = value
    return {key: value for key, value in choices.items() if value is not None}
