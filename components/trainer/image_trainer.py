"""The Trainer's `run_fn`: the two-phase transfer-learning recipe on the pipeline's data.

The input pipeline is in data.py, the model in model.py, the phases and checkpoints in
training.py, the exported signatures in serving.py. Next to the model (the model_run folder)
it writes TensorBoard logs, learning curves, the test split's confusion matrix and per-class
metrics, and a training summary (reports.py).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tf_keras
from tfx import v1 as tfx

from components.example_gen import class_names as class_names_lib
from components.trainer import data as data_lib
from components.trainer import model as model_lib
from components.trainer import reports, serving, training
from components.trainer.spec import TrainingSpec

logger = logging.getLogger(__name__)


class _PhaseEvaluation:
    """Validation and test metrics after each phase.

    The test split is predicted once per phase; its last predictions also give the confusion
    matrix, instead of a second pass over the split after training.
    """

    def __init__(self, classifier: model_lib.Classifier, data: data_lib.TrainerData, counts: Dict[str, np.ndarray]):
        self._classifier = classifier
        self._data = data
        self._counts = counts
        self._test_labels = None
        self._test_predictions = None

    def __call__(self, phase: str) -> Dict[str, float]:
        metrics = {}
        if self._counts['eval'].sum():
            loss, accuracy = self._classifier.model.evaluate(self._data.dataset('eval'), verbose=0)
            metrics['eval_accuracy'], metrics['eval_loss'] = float(accuracy), float(loss)
        if self._counts['test'].sum():
            labels, logits = self._predict_test()
            predictions = model_lib.probabilities(logits, self._classifier.num_classes).numpy().argmax(axis=1)
            metrics['test_accuracy'] = float(np.mean(predictions == labels))
            metrics['test_loss'] = float(self._classifier.model.loss(
                labels.astype(np.float32) if self._classifier.binary else labels, logits))
            self._test_predictions = predictions
        logger.info('After %s: %s', phase, ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
        return metrics

    def _predict_test(self):
        dataset = self._data.dataset('test')
        if self._test_labels is None:
            self._test_labels = np.concatenate([label.numpy() for _, label in dataset]).astype(np.int64)
        logits = self._classifier.model.predict(dataset.map(lambda inputs, _: inputs), verbose=0)
        return self._test_labels, logits

    def test_labels_and_predictions(self):
        """(labels, predicted classes) of the test split by the final model."""
        if self._test_predictions is None:  # every phase was done by an earlier, killed run
            labels, logits = self._predict_test()
            self._test_predictions = model_lib.probabilities(
                logits, self._classifier.num_classes).numpy().argmax(axis=1)
        return self._test_labels, self._test_predictions


def _checkpoint(fn_args: tfx.components.FnArgs) -> training.TrainingCheckpoint:
    """<pipeline root>/Trainer/checkpoints/<hash of the inputs>: found again by a re-run."""
    trainer_dir = os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip('/')))
    key = training.checkpoint_key(fn_args.train_files, fn_args.eval_files, fn_args.transform_output,
                                  fn_args.custom_config)
    return training.TrainingCheckpoint(os.path.join(trainer_dir, 'checkpoints', key))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    spec = TrainingSpec(**{key: fn_args.custom_config[key] for key in TrainingSpec.model_fields})
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf_keras.utils.set_random_seed(spec.seed)
    names = class_names_lib.read(class_names_lib.examples_uri_of_split_files(fn_args.train_files[0]))
    logger.info('Training on %d classes: %s', len(names), ', '.join(names))
    counts = {split: np.bincount(data_lib.labels(fn_args, split), minlength=len(names)) for split in data_lib.SPLITS}
    data = data_lib.TrainerData(fn_args, spec, binary=len(names) == 2, counts={s: int(c.sum()) for s, c in counts.items()})
    try:
        _train_and_export(fn_args, spec, names, counts, data)
    finally:
        data.close()


def _train_and_export(fn_args: tfx.components.FnArgs, spec: TrainingSpec, names: List[str],
                      counts: Dict[str, np.ndarray], data: data_lib.TrainerData) -> None:
    train, validation = data.dataset('train', shuffle=True), data.dataset('eval')

    checkpoint = _checkpoint(fn_args)
    bases = model_lib.build_bases(spec)
    feature_stats = None
    if spec.any_random_backbone:
        logger.warning('weights: none: a backbone is randomly initialised, so this is not transfer '
                       'learning and accuracy will be low; use it to test the pipeline only.')
        extractor = model_lib.build_feature_extractor(spec, bases)
        feature_stats = model_lib.feature_statistics(extractor, data_lib.sample_inputs(data.dataset('train', cache=False)))
    classifier = model_lib.build_classifier(spec, len(names), bases=bases, feature_stats=feature_stats)
    weights = None
    if spec.class_weight == 'auto':
        weights = training.class_weights(counts['train'])
        logger.info('Class weights: %s', ', '.join(f'{names[c]} {w:.3f}' for c, w in weights.items()))

    evaluate_phase = _PhaseEvaluation(classifier, data, counts)
    head_features = validation_features = None
    features_seconds = 0.0
    if spec.cache_features and spec.head_epochs:
        if not spec.augmentation:  # phase 1 trains the head alone on features
            head_features, features_seconds = data_lib.cached_features(classifier, data, spec, ('train', 'eval'))
        elif counts['eval'].sum():  # augmented training images change every epoch, validation ones do not
            (validation_features,), features_seconds = data_lib.cached_features(classifier, data, spec, ('eval',))
    state = training.train_two_phases(
        classifier, spec, train, validation, checkpoint, weights=weights,
        callbacks=[tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
        evaluate_phase=evaluate_phase, head_features=head_features, validation_features=validation_features,
        features_seconds=features_seconds, train_images=int(counts['train'].sum()))

    serving.export(classifier.model, data.transform_output, names, fn_args.serving_model_dir)
    _write_reports(fn_args.model_run_dir, spec, names, counts, state, evaluate_phase)
    checkpoint.clear()


def _write_reports(directory: str, spec: TrainingSpec, names: List[str], counts: Dict[str, np.ndarray],
                   state: training.TrainingState, evaluation: _PhaseEvaluation) -> None:
    reports.learning_curves(state.history, state.fine_tune_start_epoch,
                            os.path.join(directory, reports.LEARNING_CURVES_FILE))
    per_class = []
    if counts['test'].sum():
        matrix = reports.confusion_matrix(*evaluation.test_labels_and_predictions(), len(names))
        reports.confusion_matrix_figure(matrix, names, os.path.join(directory, reports.CONFUSION_MATRIX_FILE))
        per_class = reports.per_class_metrics(matrix, names)
    summary = {
        'class_names': names,
        'data': {split: dict(zip(names, (int(n) for n in counts[split]), strict=True)) for split in data_lib.SPLITS},
        'backbones': [{'name': b.name, 'image_size': b.image_size, 'weights': b.weights_description(),
                       'fine_tune_at': b.effective_fine_tune_at} for b in spec.backbones],
        'hyperparameters': {key: value for key, value in spec.model_dump().items() if key != 'backbones'},
        'epochs_trained': state.epochs_done,
        'fine_tune_start_epoch': state.fine_tune_start_epoch,
        'resumed_from_epoch': state.resumed_from_epoch,
        'phase_metrics': state.phase_metrics,
        'history': state.history,
        'per_class_test': per_class,
    }
    reports.write_json(summary, os.path.join(directory, reports.TRAINING_SUMMARY_FILE))
    reports.write_markdown(summary, os.path.join(directory, 'training_summary.md'))
    logger.info('Reports written to %s', directory)
