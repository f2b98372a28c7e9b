"""The Trainer's `run_fn`: the two-phase transfer-learning recipe on the pipeline's data.

This file is TFX's Trainer module file. TFX packages every .py file of this folder into the
component's cache key, so the folder holds nothing else but the `__init__.py` that makes it
importable in the Kubeflow image; the code it calls lives in the installed `components` package,
whose fingerprint the pipeline adds to `custom_config`.

The Trainer reads the raw examples and applies Transform's graph in its input pipeline
(the same graph the exported model embeds), so decoded float images are never written to
disk: 160 px float32 images would take ~300 KB each.

Next to the model (the model_run folder) it writes TensorBoard logs, learning curves, the
test split's confusion matrix and per-class metrics, and a training summary.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import class_names as class_names_lib
from components import model as model_lib
from components import reports, serving, training
from components.features import LABEL_KEY
from pipeline.config import TrainingSpec

# TFX imports this file as a top-level module; name the logger after the package it belongs to.
logger = logging.getLogger('components.trainer')

_SHUFFLE_BUFFER = 1024
_STATISTICS_IMAGES = 256
_SPLITS = ('train', 'eval', 'test')


class _Data:
    """The splits as ({input key: images}, label) datasets: raw examples -> transform graph.

    Decoding and resizing every image again in every epoch makes training input-bound (the
    tutorial's script is), so the transformed images are cached after the first pass: in
    memory when they fit in input_cache_max_gb, else in a file in a temporary folder removed
    at the end.
    """

    def __init__(self, fn_args: tfx.components.FnArgs, spec: TrainingSpec, binary: bool,
                 counts: Dict[str, int]):
        self._fn_args = fn_args
        self._spec = spec
        self._binary = binary
        self.transform_output = tft.TFTransformOutput(fn_args.transform_output)
        self.cache_mode = self._cache_mode(counts)
        self._cache_dir = tempfile.mkdtemp(prefix='input-cache-') if self.cache_mode == 'disk' else None
        self._datasets: Dict[tuple, tf.data.Dataset] = {}

    def _cache_mode(self, counts: Dict[str, int]) -> str:
        bytes_per_image = sum(4 * 3 * b.image_size ** 2 for b in self._spec.backbones)
        gigabytes = bytes_per_image * sum(counts.values()) / 2 ** 30
        mode = self._spec.input_cache
        if mode == 'auto':
            mode = 'memory' if gigabytes <= self._spec.input_cache_max_gb else 'disk'
        logger.info('Decoded images: %.2f GB for all splits; input cache: %s', gigabytes, mode)
        return mode

    def close(self) -> None:
        if self._cache_dir:
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    def dataset(self, split: str, shuffle: bool = False, cache: bool = True) -> tf.data.Dataset:
        """One pass over the split per iteration; the same object (and cache) for the same request."""
        request = (split, shuffle, cache)
        if request not in self._datasets:
            self._datasets[request] = self._build(split, shuffle, cache and self.cache_mode != 'none')
        return self._datasets[request]

    def _build(self, split: str, shuffle: bool, cache: bool) -> tf.data.Dataset:
        raw = self._fn_args.data_accessor.tf_dataset_factory(
            _split_files(self._fn_args, split),
            tfxio.TensorFlowDatasetOptions(batch_size=self._spec.batch_size, num_epochs=1,
                                           shuffle=shuffle and not cache, shuffle_seed=self._spec.seed,
                                           shuffle_buffer_size=_SHUFFLE_BUFFER, drop_final_batch=False),
            self.transform_output.raw_metadata.schema)
        transform_layer = self.transform_output.transform_features_layer()
        keys = [backbone.key for backbone in self._spec.backbones]
        binary = self._binary

        def transform(raw_features):
            transformed = transform_layer(raw_features)
            label = transformed[LABEL_KEY]
            return {key: transformed[key] for key in keys}, tf.cast(label, tf.float32) if binary else label

        dataset = raw.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        if cache:
            cache_file = os.path.join(self._cache_dir, split) if self._cache_dir else ''
            dataset = dataset.unbatch().cache(cache_file)
            if shuffle:
                dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=self._spec.seed, reshuffle_each_iteration=True)
            dataset = dataset.batch(self._spec.batch_size)
        return dataset.prefetch(tf.data.AUTOTUNE)


def _split_files(fn_args: tfx.components.FnArgs, split: str) -> List[str]:
    """File patterns of a split: train and eval as TFX gives them, test next to them."""
    examples_uri = class_names_lib.examples_uri_of_split_files(fn_args.train_files[0])
    return {'train': fn_args.train_files, 'eval': fn_args.eval_files}.get(
        split, [os.path.join(examples_uri, f'Split-{split}', '*')])


def _labels(fn_args: tfx.components.FnArgs, split: str) -> np.ndarray:
    """A split's labels, read without decoding any image."""
    files = [name for pattern in _split_files(fn_args, split) for name in tf.io.gfile.glob(pattern)]
    spec = {LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}
    records = tf.data.TFRecordDataset(files, compression_type='GZIP')
    parsed = records.batch(1024).map(lambda batch: tf.io.parse_example(batch, spec)[LABEL_KEY])
    return np.concatenate([np.zeros(0, np.int64)] + [b.numpy().ravel() for b in parsed])


def _sample_inputs(dataset: tf.data.Dataset) -> Dict[str, tf.Tensor]:
    """Up to _STATISTICS_IMAGES training images (every input), for feature statistics."""
    batches = []
    count = 0
    for inputs, _ in dataset:
        batches.append(inputs)
        count += int(next(iter(inputs.values())).shape[0])
        if count >= _STATISTICS_IMAGES:
            break
    return {key: tf.concat([b[key] for b in batches], axis=0)[:_STATISTICS_IMAGES] for key in batches[0]}


def _cached_features(classifier: model_lib.Classifier, data: '_Data', spec: TrainingSpec,
                     splits: Sequence[str]) -> Tuple[Tuple[tf.data.Dataset, ...], float]:
    """The frozen backbones' pooled features of these splits as datasets, and the seconds they took."""
    started = time.time()
    # As a graph: called eagerly, the backbone is much slower (bench/results/recipe-8c7693a.md).
    extract = tf.function(lambda inputs: classifier.features(inputs, training=False), reduce_retracing=True)
    datasets = []
    for split in splits:
        features, labels = [], []
        # The eval split is read through its image cache (phase 2 validates on it again).
        for inputs, label in data.dataset(split, cache=split == 'eval'):
            features.append(extract(inputs).numpy())
            labels.append(label.numpy())
        dataset = tf.data.Dataset.from_tensor_slices((np.concatenate(features), np.concatenate(labels)))
        if split == 'train':
            dataset = dataset.shuffle(len(dataset), seed=spec.seed, reshuffle_each_iteration=True)
        datasets.append(dataset.batch(spec.batch_size).prefetch(tf.data.AUTOTUNE))
    seconds = time.time() - started
    logger.info('Backbone features of the %s split(s) computed once in %.1f s', ' and '.join(splits), seconds)
    return tuple(datasets), seconds


class _PhaseEvaluation:
    """Validation and test metrics after each phase.

    The test split is predicted once per phase; its last predictions also give the confusion
    matrix, instead of a second pass over the split after training.
    """

    def __init__(self, classifier: model_lib.Classifier, data: _Data, counts: Dict[str, np.ndarray]):
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
    counts = {split: np.bincount(_labels(fn_args, split), minlength=len(names)) for split in _SPLITS}
    data = _Data(fn_args, spec, binary=len(names) == 2, counts={s: int(c.sum()) for s, c in counts.items()})
    try:
        _train_and_export(fn_args, spec, names, counts, data)
    finally:
        data.close()


def _train_and_export(fn_args: tfx.components.FnArgs, spec: TrainingSpec, names: List[str],
                      counts: Dict[str, np.ndarray], data: '_Data') -> None:
    train, validation = data.dataset('train', shuffle=True), data.dataset('eval')

    checkpoint = _checkpoint(fn_args)
    bases = model_lib.build_bases(spec)
    feature_stats = None
    if spec.any_random_backbone:
        logger.warning('weights: none: a backbone is randomly initialised, so this is not transfer '
                       'learning and accuracy will be low; use it to test the pipeline only.')
        extractor = model_lib.build_feature_extractor(spec, bases)
        feature_stats = model_lib.feature_statistics(extractor, _sample_inputs(data.dataset('train', cache=False)))
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
            head_features, features_seconds = _cached_features(classifier, data, spec, ('train', 'eval'))
        elif counts['eval'].sum():  # augmented training images change every epoch, validation ones do not
            (validation_features,), features_seconds = _cached_features(classifier, data, spec, ('eval',))
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
        'data': {split: dict(zip(names, (int(n) for n in counts[split]), strict=True)) for split in _SPLITS},
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
