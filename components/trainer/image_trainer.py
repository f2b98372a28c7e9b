"""The Trainer's `run_fn`: the two-phase transfer-learning recipe on the pipeline's data.

This file is TFX's Trainer module file. TFX packages every .py file of this folder into the
component's cache key, so the folder holds nothing else but the `__init__.py` that makes it
importable in the Kubeflow image; the code it calls lives in the installed `components` package,
whose fingerprint the pipeline adds to `custom_config`.

The Trainer reads the raw examples and applies Transform's graph in its input pipeline
(the same graph the exported model embeds), so decoded float images are never written to
disk: 160 px float32 images would take ~300 KB each.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import class_names as class_names_lib
from components import model as model_lib
from components import serving
from components.features import LABEL_KEY
from pipeline.config import TrainingSpec

# TFX imports this file as a top-level module; name the logger after the package it belongs to.
logger = logging.getLogger('components.trainer')

HISTORY_FILE = 'history.json'
_SHUFFLE_BUFFER = 1024
_STATISTICS_IMAGES = 256


def _dataset(fn_args: tfx.components.FnArgs, files: List[str], tf_transform_output: tft.TFTransformOutput,
             spec: TrainingSpec, binary: bool, shuffle: bool) -> tf.data.Dataset:
    """({input key: images}, label) batches: raw examples -> transform graph, one pass per epoch."""
    raw = fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=spec.batch_size, num_epochs=1, shuffle=shuffle,
                                       shuffle_seed=spec.seed, shuffle_buffer_size=_SHUFFLE_BUFFER,
                                       drop_final_batch=False),
        tf_transform_output.raw_metadata.schema)
    transform_layer = tf_transform_output.transform_features_layer()
    keys = [backbone.key for backbone in spec.backbones]

    def transform(raw_features):
        transformed = transform_layer(raw_features)
        label = transformed[LABEL_KEY]
        return {key: transformed[key] for key in keys}, tf.cast(label, tf.float32) if binary else label

    return raw.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class _EpochLog(tf_keras.callbacks.Callback):
    """One log line per epoch (Keras' own progress output bypasses logging)."""

    def __init__(self, phase: str, total_epochs: int):
        super().__init__()
        self._phase = phase
        self._total = total_epochs

    def on_epoch_end(self, epoch, logs=None):
        metrics = ' '.join(f'{key} {value:.4f}' for key, value in sorted((logs or {}).items()))
        logger.info('epoch %d/%d (%s): %s', epoch + 1, self._total, self._phase, metrics)


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


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    spec = TrainingSpec(**{key: fn_args.custom_config[key] for key in TrainingSpec.model_fields})
    tf_keras.utils.set_random_seed(spec.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    names = class_names_lib.read(class_names_lib.examples_uri_of_split_files(fn_args.train_files[0]))
    logger.info('Training on %d classes: %s', len(names), ', '.join(names))

    binary = len(names) == 2
    train = _dataset(fn_args, fn_args.train_files, tf_transform_output, spec, binary, True)
    validation = _dataset(fn_args, fn_args.eval_files, tf_transform_output, spec, binary, False)
    bases = model_lib.build_bases(spec)
    feature_stats = None
    if spec.any_random_backbone:
        logger.warning('weights: none: a backbone is randomly initialised, so this is not transfer '
                       'learning and accuracy will be low; use it to test the pipeline only.')
        extractor = model_lib.build_feature_extractor(spec, bases)
        feature_stats = model_lib.feature_statistics(extractor, _sample_inputs(train))
    classifier = model_lib.build_classifier(spec, len(names), bases=bases, feature_stats=feature_stats)

    tensorboard = tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)
    total_epochs = spec.head_epochs + spec.fine_tune_epochs
    history = {}
    epochs = 0
    if spec.head_epochs:
        model_lib.compile_for_head(classifier, spec)
        trainable, frozen = model_lib.trainable_counts(classifier.model)
        logger.info('Phase 1: training the head for %d epochs (%d trainable, %d frozen parameters)',
                    spec.head_epochs, trainable, frozen)
        epochs = spec.head_epochs
        result = classifier.model.fit(train, validation_data=validation, epochs=epochs, verbose=0,
                                      callbacks=[tensorboard, _EpochLog('head', total_epochs)])
        _extend(history, result.history)
    if spec.fine_tune_epochs:
        model_lib.compile_for_fine_tuning(classifier, spec)
        trainable, frozen = model_lib.trainable_counts(classifier.model)
        logger.info('Phase 2: fine-tuning (%s) for %d epochs (%d trainable, %d frozen parameters)',
                    ', '.join(f'{b.name} from layer {b.effective_fine_tune_at}' for b in spec.backbones),
                    spec.fine_tune_epochs, trainable, frozen)
        result = classifier.model.fit(train, validation_data=validation, initial_epoch=epochs,
                                      epochs=total_epochs, verbose=0,
                                      callbacks=[tensorboard, _EpochLog('fine-tuning', total_epochs)])
        _extend(history, result.history)

    serving.export(classifier.model, tf_transform_output, names, fn_args.serving_model_dir)
    summary = {'class_names': names, 'fine_tune_start_epoch': spec.head_epochs,
               'history': history, 'params': spec.model_dump()}
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), 'w') as f:
        json.dump(summary, f, indent=1)
    final = {key: values[-1] for key, values in history.items()}
    logger.info('Trained: %s', ', '.join(f'{k} {v:.4f}' for k, v in sorted(final.items())))


def _extend(history: dict, new: dict) -> None:
    for key, values in new.items():
        history.setdefault(key, []).extend(float(v) for v in values)
