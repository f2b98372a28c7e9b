"""The two training phases, checkpointed after every epoch so a killed Trainer resumes.

Phase 1 trains the head with the backbones frozen; phase 2 unfreezes each backbone's top
layers. After every epoch the model, its optimizer state and the history so far are written
to a checkpoint folder whose name is derived from the Trainer's inputs (examples, transform
graph, configuration and code version). When a Trainer run on the same inputs is killed and
started again, it finds that folder, says so, and continues from the last finished epoch;
a successful run deletes it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import model as model_lib
from components.trainer import recipe
from components.trainer.spec import TrainingSpec

logger = logging.getLogger(__name__)

HEAD, FINE_TUNE = 'head', 'fine-tuning'
_STATE_FILE = 'state.json'
BEST_PREFIX = 'best'


def checkpoint_key(*inputs) -> str:
    """A stable name for "the same inputs": a hash of their JSON."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclasses.dataclass
class TrainingState:
    """Where a training run is: epochs finished (counted across both phases), phases done."""
    epochs_done: int = 0
    phase: Optional[str] = None
    completed_phases: List[str] = dataclasses.field(default_factory=list)
    fine_tune_start_epoch: Optional[int] = None
    history: Dict[str, List[float]] = dataclasses.field(default_factory=dict)
    phase_metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    weights_prefix: Optional[str] = None
    resumed_from_epoch: Optional[int] = None
    # The best validation figures of the current phase so far (val_loss, val_accuracy), by
    # early_stopping_metric, with their epoch (counted across both phases; the phase's
    # start_epoch for the weights it started from) and phase; its weights are in the
    # checkpoint under BEST_PREFIX.
    best: Optional[Dict[str, object]] = None
    # Phase 2 ended with the weights phase 1 left (no fine-tuning epoch beat them).
    kept_head_only_model: bool = False
    # What the recipe chose (recipe.choices_made), so a resumed run trains the same way.
    recipe_choices: Optional[Dict[str, object]] = None


class TrainingCheckpoint:
    """The per-epoch checkpoint folder of one set of Trainer inputs."""

    def __init__(self, directory: str):
        self.directory = directory

    def load(self) -> Optional[TrainingState]:
        path = os.path.join(self.directory, _STATE_FILE)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            return TrainingState(**json.load(f))

    def save(self, model: tf_keras.Model, state: TrainingState, optimizer=None) -> None:
        """Weights (and optimizer state) first under a new prefix, then the state file that
        points to them, so a kill at any moment leaves the previous checkpoint usable."""
        tf.io.gfile.makedirs(self.directory)
        previous = state.weights_prefix
        prefix = f'epoch-{state.epochs_done}-{len(state.completed_phases)}'
        objects = dict(model=model, optimizer=optimizer) if optimizer is not None else dict(model=model)
        tf.train.Checkpoint(**objects).write(os.path.join(self.directory, prefix))
        state.weights_prefix = prefix
        temporary = os.path.join(self.directory, _STATE_FILE + '.tmp')
        with tf.io.gfile.GFile(temporary, 'w') as f:
            json.dump(dataclasses.asdict(state), f)
        tf.io.gfile.rename(temporary, os.path.join(self.directory, _STATE_FILE), overwrite=True)
        if previous and previous != prefix:
            for old in tf.io.gfile.glob(os.path.join(self.directory, previous + '.*')):
                tf.io.gfile.remove(old)

    def restore(self, model: tf_keras.Model, state: TrainingState, optimizer=None, variables=None) -> None:
        """The model's weights, and the optimizer's state (built for `variables`) if given."""
        if optimizer is not None:
            optimizer.build(variables)  # slots must exist to be restored
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        else:
            checkpoint = tf.train.Checkpoint(model=model)
        checkpoint.read(os.path.join(self.directory, state.weights_prefix)).expect_partial()

    def save_best(self, model: tf_keras.Model) -> None:
        tf.io.gfile.makedirs(self.directory)
        tf.train.Checkpoint(model=model).write(os.path.join(self.directory, BEST_PREFIX))

    def restore_best(self, model: tf_keras.Model) -> None:
        tf.train.Checkpoint(model=model).read(os.path.join(self.directory, BEST_PREFIX)).expect_partial()

    def clear(self) -> None:
        if tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)


class _ValidationOnFeatures(tf_keras.callbacks.Callback):
    """Phase 1's validation metrics from backbone features computed once.

    With the backbones frozen, a validation image (never augmented) has the same features
    every epoch, so validating means running the head alone on them. Must come first among
    the callbacks: it adds val_loss and val_accuracy to the epoch's logs for the others.
    """

    def __init__(self, classifier: model_lib.Classifier, features: tf.data.Dataset):
        super().__init__()
        self._head = model_lib.build_head_model(classifier)
        model_lib.compile_for_evaluation(classifier, self._head)
        self._features = features

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        if logs is not None:
            results = self._head.evaluate(self._features, verbose=0, return_dict=True)
            logs.update({f'val_{name}': value for name, value in results.items()})


def _better(figures: Dict[str, float], than: Dict[str, float], metric: str) -> bool:
    """Whether validation `figures` beat `than` by `metric`: a lower val_loss, or a higher
    val_accuracy with a lower val_loss breaking ties."""
    if metric == 'val_accuracy' and 'val_accuracy' in than:
        if figures['val_accuracy'] != than['val_accuracy']:
            return figures['val_accuracy'] > than['val_accuracy']
    return figures['val_loss'] < than['val_loss']


def _figures(best: Dict[str, object]) -> str:
    return ', '.join(f'{key.replace("_", " ")} {best[key]:.4f}' for key in ('val_accuracy', 'val_loss') if key in best)


class _KeepBest(tf_keras.callbacks.Callback):
    """Early stopping on validation loss or accuracy that ends the phase with its best weights.

    Unlike Keras' EarlyStopping, the weights the phase started from can win (start: their
    validation loss and accuracy; phase 2 starts from phase 1's model), and the best weights are
    written to the checkpoint folder, so a resumed run still knows them. Must come before
    _EpochEnd, which saves the state this updates.
    """

    def __init__(self, patience: int, metric: str, checkpoint: TrainingCheckpoint, state: TrainingState,
                 phase: str, classifier_model: tf_keras.Model, start: Optional[Dict[str, float]] = None):
        super().__init__()
        self._patience, self._metric, self._checkpoint, self._state = patience, metric, checkpoint, state
        self._phase, self._classifier_model = phase, classifier_model
        if state.best is None or state.best.get('phase') != phase:  # a new phase, not a resumed one
            state.best = None
            if start and start.get('val_loss') is not None:
                state.best = dict(phase=phase, **{k: float(v) for k, v in start.items() if v is not None},
                                  epoch=state.epochs_done, start_epoch=state.epochs_done)
                checkpoint.save_best(classifier_model)
        self._last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if logs.get('val_loss') is None:
            return
        figures = {key: float(logs[key]) for key in ('val_loss', 'val_accuracy') if key in logs}
        self._last_epoch = epoch + 1
        best = self._state.best
        if best is None or _better(figures, best, self._metric):
            self._state.best = dict(best or {}, phase=self._phase, **figures, epoch=epoch + 1)
            self._checkpoint.save_best(self._classifier_model)
        elif epoch + 1 - best['epoch'] >= self._patience:
            logger.info('%s: %s has not improved for %d epochs, stopping', self._phase,
                        self._metric.replace('_', 'idation ', 1), self._patience)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        best = self._state.best
        if best is None or best['epoch'] == self._last_epoch:
            return
        self._checkpoint.restore_best(self._classifier_model)
        if best['epoch'] == best.get('start_epoch'):
            logger.info('%s: no epoch beat the model the phase started from (%s): keeping it',
                        self._phase, _figures(best))
        else:
            logger.info('%s: keeping the weights of epoch %d (%s)', self._phase, best['epoch'], _figures(best))

    @property
    def kept_start_weights(self) -> bool:
        best = self._state.best
        return best is not None and best['epoch'] == best.get('start_epoch')


class _EpochEnd(tf_keras.callbacks.Callback):
    """Records the epoch's metrics, logs one line, and checkpoints the whole classifier."""

    def __init__(self, checkpoint: TrainingCheckpoint, state: TrainingState, phase: str, total: int,
                 classifier_model: tf_keras.Model):
        super().__init__()
        self._checkpoint, self._state, self._phase, self._total = checkpoint, state, phase, total
        self._classifier_model = classifier_model

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self._state.history.setdefault(key, []).append(float(value))
        self._state.epochs_done = epoch + 1
        self._state.phase = self._phase
        self._checkpoint.save(self._classifier_model, self._state, optimizer=self.model.optimizer)
        metrics = ' '.join(f'{key} {value:.4f}' for key, value in sorted(logs.items()))
        logger.info('epoch %d/%d (%s): %s', epoch + 1, self._total, self._phase, metrics)


def _count_batches(dataset: tf.data.Dataset) -> int:
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality > 0 else sum(1 for _ in dataset)


def class_weights(counts: np.ndarray) -> Dict[int, float]:
    """n / (num_classes * n_c) from training images per class: each class then weighs as much
    in the loss as in a balanced dataset (scikit-learn's compute_class_weight('balanced'))."""
    missing = [c for c, n in enumerate(counts) if n == 0]
    if missing:
        raise ValueError(f'class_weight: auto: class indices {missing} have no training image')
    return {c: float(counts.sum() / (len(counts) * n)) for c, n in enumerate(counts)}


def train_two_phases(classifier: model_lib.Classifier, spec: TrainingSpec, train: tf.data.Dataset,
                     validation: tf.data.Dataset, checkpoint: TrainingCheckpoint,
                     weights: Optional[Dict[int, float]] = None,
                     callbacks: List[tf_keras.callbacks.Callback] = (),
                     evaluate_phase: Callable[[str], Dict[str, float]] = lambda phase: {},
                     head_features: Optional[Tuple[tf.data.Dataset, tf.data.Dataset]] = None,
                     validation_features: Optional[tf.data.Dataset] = None,
                     features_seconds: float = 0.0,
                     train_images: Optional[int] = None,
                     recipe_choices: Optional[Dict[str, object]] = None,
                     trained_head: Optional[Tuple[List[np.ndarray], Dict[str, List[float]]]] = None,
                     fine_tune_on: Optional[Tuple[tf_keras.Model, tf.data.Dataset, Optional[tf.data.Dataset]]] = None,
                     ) -> TrainingState:
    """Runs (or resumes) phase 1 and phase 2; evaluate_phase(phase) is called after each.

    head_features: (train, validation or None) datasets of the frozen backbones' features of
    un-augmented images, computed once: phase 1 then trains the head alone on them.
    validation_features: the validation split's features alone (with augmentation on):
    phase 1 validates the head on them instead of running the backbone over the split again.
    features_seconds: the time it took to compute them, counted in phase 1's time.
    train_images: the number of training images, to report images per second.
    recipe_choices: what the recipe chose, kept in the checkpoint for a resumed run.
    trained_head: (weights of the head layers, history) of a head already trained on the
    cached features (recipe.choose_head's best candidate): phase 1 takes it instead of training.
    fine_tune_on: (model, train, validation) for phase 2 instead of the classifier on the
    images: the classifier above its backbones' frozen bottoms and their outputs computed once
    (frozen_bottom.py); the model shares the classifier's layers, so training it trains them.
    """
    state = checkpoint.load()
    completed_before = list(state.completed_phases) if state else []
    trained_now = False
    if state:
        state.resumed_from_epoch = state.epochs_done
        logger.warning('Resuming an interrupted training run from its checkpoint: %d epoch(s) done '
                       '(%s), continuing instead of starting over (%s)', state.epochs_done,
                       ', '.join(state.completed_phases) + ' finished' if state.completed_phases else
                       f'{state.phase} phase', checkpoint.directory)
    else:
        state = TrainingState(recipe_choices=recipe_choices)
    if recipe.missing(spec):
        raise ValueError(f'the recipe has not chosen {", ".join(recipe.missing(spec))} (see recipe.resolve)')
    total = spec.head_epochs + spec.fine_tune_epochs
    model = classifier.model

    timings: Dict[str, Dict[str, float]] = {}

    def fit(phase: str, epochs: int, fit_model: tf_keras.Model, data: tf.data.Dataset,
            validation_data: Optional[tf.data.Dataset], validation: Optional[_ValidationOnFeatures] = None,
            start: Optional[Dict[str, float]] = None) -> Optional[_KeepBest]:
        phase_callbacks = [_EpochEnd(checkpoint, state, phase, total, model), *callbacks]
        keep_best = None
        if spec.early_stopping_patience:
            keep_best = _KeepBest(spec.early_stopping_patience, spec.early_stopping_metric or 'val_loss', checkpoint,
                                  state, phase, model, start)
            phase_callbacks.insert(0, keep_best)
        if validation is not None:
            phase_callbacks.insert(0, validation)
        first_epoch = state.epochs_done
        started = time.time()
        fit_model.fit(data, validation_data=validation_data, initial_epoch=state.epochs_done,
                      epochs=state.epochs_done + epochs, class_weight=weights, verbose=0,
                      callbacks=phase_callbacks)
        seconds = time.time() - started + (features_seconds if phase == HEAD else 0.0)
        timings[phase] = {'seconds': seconds, 'epochs': state.epochs_done - first_epoch}
        if train_images:
            timings[phase]['images_per_second'] = train_images * timings[phase]['epochs'] / seconds
        return keep_best

    def finish(phase: str, same_model_as: Optional[str] = None) -> None:
        """same_model_as: an earlier phase that left the same weights (phase 2 kept phase 1's
        model), whose evaluation is then this phase's too, instead of evaluating again."""
        state.completed_phases.append(phase)
        if same_model_as:
            evaluated = {key: value for key, value in state.phase_metrics[same_model_as].items()
                         if key.startswith(('eval_', 'test_'))}
            logger.info('After %s: the %s model, as evaluated then', phase, same_model_as)
        else:
            evaluated = evaluate_phase(phase)
        state.phase_metrics[phase] = {**evaluated, **timings.get(phase, {})}
        # The weights only (the next phase has a new optimizer); with early stopping, the best.
        checkpoint.save(model, state)

    if spec.head_epochs and HEAD not in state.completed_phases and trained_head is not None:
        head_weights, history = trained_head
        model_lib.build_head_model(classifier).set_weights(head_weights)
        for key, values in history.items():
            state.history[key] = list(values)
        state.epochs_done, state.phase = len(history['val_loss']), HEAD
        timings[HEAD] = {'seconds': features_seconds, 'epochs': state.epochs_done}
        logger.info('Phase 1: the head the recipe chose is already trained on the cached features (%d epochs)',
                    state.epochs_done)
        model_lib.compile_for_head(classifier, spec)  # to evaluate the whole classifier
        finish(HEAD)
        trained_now = True
    if spec.head_epochs and HEAD not in state.completed_phases:
        head_model = model_lib.build_head_model(classifier) if head_features else model
        model_lib.compile_for_head(classifier, spec, head_model)
        head_epochs_left = spec.head_epochs - state.epochs_done
        if state.phase == HEAD:
            checkpoint.restore(model, state, optimizer=head_model.optimizer,
                               variables=head_model.trainable_variables)
        trainable, frozen = model_lib.trainable_counts(model)
        logger.info('Phase 1: training the head for %d epochs (%d trainable, %d frozen parameters)%s',
                    head_epochs_left, trainable, frozen,
                    ' on backbone features computed once' if head_features else '')
        if head_features:
            fit(HEAD, head_epochs_left, head_model, *head_features)
        elif validation_features is not None:
            fit(HEAD, head_epochs_left, head_model, train, None,
                validation=_ValidationOnFeatures(classifier, validation_features))
        else:
            fit(HEAD, head_epochs_left, head_model, train, validation)
        if head_model is not model:
            model_lib.compile_for_head(classifier, spec)  # to evaluate the whole classifier
        finish(HEAD)
        trained_now = True
    if spec.fine_tune_epochs and FINE_TUNE not in state.completed_phases:
        steps_per_epoch = math.ceil(train_images / spec.batch_size) if train_images else _count_batches(train)
        fine_tune_model, fine_tune_train, fine_tune_validation = fine_tune_on or (model, train, validation)
        model_lib.compile_for_fine_tuning(classifier, spec, steps_per_epoch, model=fine_tune_model)
        if state.phase == FINE_TUNE:
            checkpoint.restore(model, state, optimizer=fine_tune_model.optimizer,
                               variables=fine_tune_model.trainable_variables)
            epochs_left = state.fine_tune_start_epoch + spec.fine_tune_epochs - state.epochs_done
        else:
            if HEAD in completed_before:  # phase 1 ended in the interrupted run
                checkpoint.restore(model, state)
            state.fine_tune_start_epoch = state.epochs_done
            epochs_left = spec.fine_tune_epochs
        trainable, frozen = model_lib.trainable_counts(model)
        logger.info('Phase 2: fine-tuning (%s) for %d epochs (%d trainable, %d frozen parameters)%s',
                    ', '.join(f'{b.name} from layer {b.effective_fine_tune_at}' for b in spec.backbones),
                    epochs_left, trainable, frozen,
                    ' above the frozen bottoms\' outputs computed once' if fine_tune_on else '')
        head_metrics = state.phase_metrics.get(HEAD, {})
        keep_best = fit(FINE_TUNE, epochs_left, fine_tune_model, fine_tune_train, fine_tune_validation,
                        start={'val_loss': head_metrics.get('eval_loss'), 'val_accuracy': head_metrics.get('eval_accuracy')})
        state.kept_head_only_model = bool(keep_best and keep_best.kept_start_weights)
        if state.kept_head_only_model:
            logger.warning('Fine-tuning did not improve on the head-only model\'s %s: the model trained so far is '
                           'kept, as phase 1 left it', (spec.early_stopping_metric or 'val_loss').replace('_', 'idation ', 1))
        finish(FINE_TUNE, same_model_as=HEAD if state.kept_head_only_model and HEAD in state.phase_metrics else None)
        trained_now = True
    if completed_before and not trained_now:  # interrupted after the last phase had ended
        checkpoint.restore(model, state)
    return state
