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
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import model as model_lib
from components.trainer.spec import TrainingSpec

logger = logging.getLogger(__name__)

HEAD, FINE_TUNE = 'head', 'fine-tuning'
_STATE_FILE = 'state.json'


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
                     train_images: Optional[int] = None) -> TrainingState:
    """Runs (or resumes) phase 1 and phase 2; evaluate_phase(phase) is called after each.

    head_features: (train, validation) datasets of the frozen backbones' features, computed
    once: phase 1 then trains the head alone on them (only valid without augmentation).
    validation_features: the validation split's features alone (with augmentation on):
    phase 1 validates the head on them instead of running the backbone over the split again.
    features_seconds: the time it took to compute them, counted in phase 1's time.
    train_images: the number of training images, to report images per second.
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
        state = TrainingState()
    total = spec.head_epochs + spec.fine_tune_epochs
    model = classifier.model

    timings: Dict[str, Dict[str, float]] = {}

    def fit(phase: str, epochs: int, fit_model: tf_keras.Model, data: tf.data.Dataset,
            validation_data: Optional[tf.data.Dataset], validation: Optional[_ValidationOnFeatures] = None) -> None:
        phase_callbacks = [_EpochEnd(checkpoint, state, phase, total, model), *callbacks]
        if spec.early_stopping_patience:
            phase_callbacks.insert(0, tf_keras.callbacks.EarlyStopping(
                monitor='val_loss', patience=spec.early_stopping_patience, restore_best_weights=True))
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

    def finish(phase: str) -> None:
        state.completed_phases.append(phase)
        state.phase_metrics[phase] = {**evaluate_phase(phase), **timings.get(phase, {})}
        # The weights only (the next phase has a new optimizer); with early stopping, the best.
        checkpoint.save(model, state)

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
        model_lib.compile_for_fine_tuning(classifier, spec)
        if state.phase == FINE_TUNE:
            checkpoint.restore(model, state, optimizer=model.optimizer, variables=model.trainable_variables)
            epochs_left = state.fine_tune_start_epoch + spec.fine_tune_epochs - state.epochs_done
        else:
            if HEAD in completed_before:  # phase 1 ended in the interrupted run
                checkpoint.restore(model, state)
            state.fine_tune_start_epoch = state.epochs_done
            epochs_left = spec.fine_tune_epochs
        trainable, frozen = model_lib.trainable_counts(model)
        logger.info('Phase 2: fine-tuning (%s) for %d epochs (%d trainable, %d frozen parameters)',
                    ', '.join(f'{b.name} from layer {b.effective_fine_tune_at}' for b in spec.backbones),
                    epochs_left, trainable, frozen)
        fit(FINE_TUNE, epochs_left, model, train, validation)
        finish(FINE_TUNE)
        trained_now = True
    if completed_before and not trained_now:  # interrupted after the last phase had ended
        checkpoint.restore(model, state)
    return state
