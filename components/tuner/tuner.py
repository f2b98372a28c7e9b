"""TransferLearningTuner: KerasTuner trials of the head on features computed once, then of fine-tuning.

    search():  the frozen backbones' features of the train and eval splits, once (one backbone
               pass gives every pooled kind that is searched: gap, max, flatten)
               -> head trials: the Trainer's own head layers (model.build_candidate_head) with the
                  trial's values, trained on those features until the validation loss has not
                  improved for `patience` epochs; the best epoch's weights and loss count
               -> fine-tuning trials: the best head values, that head trained again on the
                  features (same seed, same order of examples: the same head), put into the
                  Trainer's classifier (model.build_classifier), which is fine-tuned on the images
                  (augmentation, BatchNorm in inference mode, the recipe's optimizer and
                  schedule, as the Trainer's phase 2) for fine_tune_trial_epochs; the backbones'
                  weights are reset before each such trial

Every trial is scored by its best validation loss: cross-entropy on the eval split, without
the head's L2 penalty, so that trials with different `head_l2` are compared on the data alone.
The data, the classifier and the compile steps are the Trainer's (components/trainer), so a
trial trains what the Trainer will train with the same values.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import keras_tuner
import numpy as np
import tensorflow as tf
import tf_keras
from keras_tuner.engine import trial as trial_module

from components.example_gen import class_names as class_names_lib
from components.trainer import backbones
from components.trainer import data as data_lib
from components.trainer import hyperparameters as trainer_hyperparameters
from components.trainer import model as model_lib
from components.trainer import recipe as recipe_lib
from components.trainer import training
from components.trainer.spec import TrainingSpec
from components.tuner.oracle import StagedOracle, fine_tune_space, head_space
from components.tuner.spec import FINE_TUNE_STAGE, STAGE, TuningSpec

logger = logging.getLogger(__name__)

_POOLING = {
    'gap': tf_keras.layers.GlobalAveragePooling2D,
    'max': tf_keras.layers.GlobalMaxPooling2D,
    'flatten': tf_keras.layers.Flatten,
}
_CROSS_ENTROPY = 'cross_entropy'
_VALIDATION_LOSS = 'val_' + _CROSS_ENTROPY
_SPLITS = ('train', 'eval')


@dataclasses.dataclass
class _Features:
    """One pooled kind's features of the train and eval splits, and their statistics."""
    train: Tuple[np.ndarray, np.ndarray]
    eval: Tuple[np.ndarray, np.ndarray]
    # (mean, std) per feature for a randomly initialised backbone (weights: none), as the
    # Trainer standardises them (model.standardisation); None otherwise.
    stats: Optional[Tuple[np.ndarray, np.ndarray]]

    def datasets(self, spec: TrainingSpec) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
        """New datasets for each trial: the same seed then gives every trial the same order of
        training examples in every epoch (one dataset reshuffles differently each time it is read)."""
        train = tf.data.Dataset.from_tensor_slices(self.train).shuffle(
            len(self.train[1]), seed=spec.seed, reshuffle_each_iteration=True)
        return (train.batch(spec.batch_size).prefetch(tf.data.AUTOTUNE),
                tf.data.Dataset.from_tensor_slices(self.eval).batch(spec.batch_size))


def searches_head_kind(spec: TrainingSpec) -> bool:
    """`head` (gap, max, flatten) only applies when every backbone outputs a feature map."""
    return all(backbones.get(b.name).output == 'feature_map' for b in spec.backbones)


class TransferLearningTuner(keras_tuner.Tuner):
    """A KerasTuner tuner for this pipeline's classifier; see the module docstring."""

    def __init__(self, fn_args, spec: TrainingSpec, tuning: TuningSpec, directory: Optional[str] = None,
                 project_name: str = 'image_transfer_learning'):
        self._fn_args = fn_args
        self._spec = spec
        self._tuning = tuning
        head = head_space(tuning, searches_head_kind(spec))
        if not head.space:
            raise ValueError('tuning: nothing to search for these backbones (head applies to feature maps only)')
        fine_tune = fine_tune_space(tuning) if tuning.fine_tune_trials else None
        oracle = StagedOracle(tuning, head, fine_tune, seed=spec.seed if tuning.seed is None else tuning.seed)
        oracle.verbose = 0  # KerasTuner prints each trial to stdout; run_trial logs it instead
        super().__init__(oracle=oracle, directory=directory or tempfile.mkdtemp(prefix='tuner-'),
                         project_name=project_name, overwrite=True)
        self._data: Optional[data_lib.TrainerData] = None

    # --- The search --------------------------------------------------------------------------

    def search(self, *fit_args, **fit_kwargs) -> None:
        started = time.time()
        try:
            self._prepare()
            super().search(*fit_args, **fit_kwargs)
        finally:
            if self._data is not None:
                self._data.close()
        self._check_completed()
        logger.info('Tuning finished in %.0f s: %d trials', time.time() - started, len(self.oracle.trials))

    def _prepare(self) -> None:
        spec, fn_args = self._spec, self._fn_args
        if spec.deterministic:
            tf.config.experimental.enable_op_determinism()
        tf_keras.utils.set_random_seed(spec.seed)
        self._names = class_names_lib.read(class_names_lib.examples_uri_of_split_files(fn_args.train_files[0]))
        counts = {split: np.bincount(data_lib.labels(fn_args, split), minlength=len(self._names))
                  for split in _SPLITS}
        if not counts['eval'].sum():
            raise ValueError('The Tuner scores every trial on the eval split, which has no images')
        self._binary = len(self._names) == 2
        self._class_weight = training.class_weights(counts['train']) if spec.class_weight == 'auto' else None
        self._data = data_lib.TrainerData(fn_args, spec, binary=self._binary,
                                          counts={split: int(c.sum()) for split, c in counts.items()})
        self._bases = model_lib.build_bases(spec)
        self._initial_base_weights = {key: base.get_weights() for key, base in self._bases.items()}
        self._steps_per_epoch = math.ceil(int(counts['train'].sum()) / spec.batch_size)
        self._features = self._compute_features(int(sum(c.sum() for c in counts.values())))

    def _kinds(self) -> List[Optional[str]]:
        """The pooled kinds trials need: the searched ones, or None for the configured head."""
        searched = any(hp.name == 'head' for hp in self.oracle.hyperparameters.space)
        return list(self._tuning.head) if searched else [None]

    def _compute_features(self, images: int) -> Dict[Optional[str], _Features]:
        """Every kind's features from one pass of the backbones over the train and eval splits."""
        spec = self._spec
        inputs = {b.key: tf_keras.Input((b.image_size, b.image_size, 3), name=b.key) for b in spec.backbones}
        kinds = self._kinds()
        pooled = {kind: [] for kind in kinds}
        for backbone in spec.backbones:
            base = self._bases[backbone.key]
            x = base(inputs[backbone.key], training=False)  # once per backbone, pooled in every kind
            for kind in kinds:
                pooling, _ = model_lib.pooling_decision(kind or spec.head, backbones.output_is_feature_map(base),
                                                        backbone.name)
                pooled[kind].append(_POOLING[pooling]()(x) if pooling else x)
        outputs = [parts[0] if len(parts) == 1 else tf_keras.layers.Concatenate()(parts) for parts in pooled.values()]
        widths = [int(output.shape[-1]) for output in outputs]
        gigabytes = 4 * sum(widths) * images / 2 ** 30
        if gigabytes > self._tuning.max_feature_gb:
            raise ValueError(
                f'tuning.max_feature_gb: the features of {images} images for head kinds '
                f'{", ".join(str(k or spec.head) for k in kinds)} ({" + ".join(map(str, widths))} values each) '
                f'would take {gigabytes:.2f} GB, more than {self._tuning.max_feature_gb} GB; raise it or '
                f'leave flatten out of tuning.head')
        combined = outputs[0] if len(outputs) == 1 else tf_keras.layers.Concatenate()(outputs)
        extractor = tf_keras.Model(inputs, combined, name='tuning_features')
        started = time.time()
        train, validation = (data_lib.feature_arrays(extractor, self._data, split) for split in _SPLITS)
        logger.info('Tuner: backbone features (%s) of %d images computed once in %.1f s, %.3f GB',
                    ', '.join(f'{k or spec.head} {w}' for k, w in zip(kinds, widths, strict=True)),
                    images, time.time() - started, gigabytes)
        stats = model_lib.standardisation(train[0]) if spec.any_random_backbone else None
        features, start = {}, 0
        for kind, width in zip(kinds, widths, strict=True):
            columns = slice(start, start + width)
            features[kind] = _Features(
                train=(train[0][:, columns], train[1]), eval=(validation[0][:, columns], validation[1]),
                stats=(stats[0][columns], stats[1][columns]) if stats else None)
            start += width
        return features

    def _check_completed(self) -> None:
        final = self.oracle.final_stage
        if self.oracle.best_trial_of(final) is None:
            trials = self.oracle.trials_of(final)
            messages = [t.message for t in trials if t.message]
            raise RuntimeError(f'No {final} trial of the Tuner completed ({len(trials)} tried); the last error:\n'
                               + (messages[-1] if messages else '(none recorded)'))

    # --- One trial ---------------------------------------------------------------------------

    def run_trial(self, trial: trial_module.Trial, *fit_args, **fit_kwargs) -> Dict[str, float]:
        values = dict(trial.hyperparameters.values)
        stage = values.pop(STAGE)
        started = time.time()
        tf_keras.utils.set_random_seed(self._spec.seed)  # every trial starts from the same weights
        if stage == FINE_TUNE_STAGE:
            for key, base in self._bases.items():  # undo the previous trial's fine-tuning
                base.set_weights(self._initial_base_weights[key])
        spec = self.trial_spec(values)
        kind = values.get('head')
        head, metrics = self._train_head(spec, kind)
        if stage == FINE_TUNE_STAGE:
            metrics = self._fine_tune(head, spec, kind)
        logger.info('Tuner trial %s (%s): %s -> val_loss %.4f, val_accuracy %.3f after %d epoch(s), %.0f s',
                    trial.trial_id, stage, ', '.join(f'{k} {_format(v)}' for k, v in sorted(values.items())),
                    metrics['val_loss'], metrics['val_accuracy'], metrics['epoch'], time.time() - started)
        return {'val_loss': metrics['val_loss'], 'val_accuracy': metrics['val_accuracy']}

    def trial_spec(self, values: Dict) -> TrainingSpec:
        """The training spec with a trial's values, applied as the Trainer applies the Tuner's, and
        the recipe's numbers for the keys the config leaves unset."""
        tuned = trainer_hyperparameters.values_of({'values': values})  # the Trainer's check of the names
        spec = recipe_lib.resolve(trainer_hyperparameters.apply(self._spec, tuned))
        # Keys recipe auto chooses from the data in the Trainer (the head's, when not searched;
        # augmentation) take what auto falls back to without validation images.
        unset = {key: recipe_lib.AUTO_WITHOUT_VALIDATION[key] for key in recipe_lib.missing(spec)
                 if key in recipe_lib.AUTO_WITHOUT_VALIDATION}
        return spec.model_copy(update=unset) if unset else spec

    def _train_head(self, spec: TrainingSpec, kind: Optional[str]) -> Tuple[tf_keras.Model, Dict]:
        """The Trainer's head with these values (its own layers, standalone: nothing of it stays
        attached to the backbones after the trial), trained alone on the cached features."""
        features = self._features[kind]
        head = model_lib.build_candidate_head(spec, len(self._names), features.train[0].shape[-1], features.stats)
        model_lib.compile_head(head, spec, self._binary)
        self._compile_for_scoring(head)
        stop = tf_keras.callbacks.EarlyStopping(monitor=_VALIDATION_LOSS, mode='min', patience=self._tuning.patience,
                                                restore_best_weights=True)
        train, validation = features.datasets(spec)
        history = head.fit(train, validation_data=validation, epochs=self._tuning.max_head_epochs,
                           class_weight=self._class_weight, verbose=0, callbacks=[stop])
        return head, _best_epoch(history)

    def _fine_tune(self, head: tf_keras.Model, spec: TrainingSpec, kind: Optional[str]) -> Dict:
        """The Trainer's classifier with that trained head, fine-tuned as the Trainer's phase 2 does,
        for fine_tune_trial_epochs epochs on the images."""
        classifier = model_lib.build_classifier(spec, len(self._names), bases=self._bases,
                                                feature_stats=self._features[kind].stats)
        model_lib.build_head_model(classifier).set_weights(head.get_weights())
        model_lib.compile_for_fine_tuning(classifier, spec, self._steps_per_epoch)
        self._compile_for_scoring(classifier.model)
        history = classifier.model.fit(
            self._data.dataset('train', shuffle=True), validation_data=self._data.dataset('eval'),
            epochs=self._tuning.fine_tune_trial_epochs, class_weight=self._class_weight, verbose=0)
        return _best_epoch(history)

    def _compile_for_scoring(self, model: tf_keras.Model) -> None:
        """Compiled again with the same optimizer and loss, plus the cross-entropy alone as a metric:
        Keras' val_loss includes the head's L2 penalty, which differs between trials."""
        if self._binary:
            metrics = [tf_keras.metrics.BinaryAccuracy(threshold=0.0, name='accuracy'),
                       tf_keras.metrics.BinaryCrossentropy(from_logits=True, name=_CROSS_ENTROPY)]
        else:
            metrics = [tf_keras.metrics.SparseCategoricalAccuracy(name='accuracy'),
                       tf_keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name=_CROSS_ENTROPY)]
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=metrics)

    # --- What TFX's Tuner executor calls besides search() ------------------------------------

    def get_best_hyperparameters(self, num_trials: int = 1) -> List[keras_tuner.HyperParameters]:
        """The best trials' hyper-parameters without their stage, which the Trainer does not take."""
        best = []
        for hyperparameters in super().get_best_hyperparameters(num_trials):
            copy = hyperparameters.copy()
            copy.values = {name: value for name, value in hyperparameters.values.items() if name != STAGE}
            best.append(copy)
        return best

    def search_space_summary(self, extended: bool = False) -> None:
        """Logged, not printed (KerasTuner prints to stdout, past the pipeline's console filter)."""
        head = [hp.name for hp in self.oracle.hyperparameters.space]
        fine_tune = [hp.name for hp in fine_tune_space(self._tuning).space] if self.oracle.fine_tune_trials else []
        logger.info('Tuner: %d head trials (%s search) of %s%s', self._tuning.head_trials, self._tuning.search,
                    ', '.join(head), f'; then up to {self.oracle.fine_tune_trials} fine-tuning trials of '
                    f'{", ".join(fine_tune)}' if fine_tune else '')

    def results_summary(self, num_trials: int = 10) -> None:
        best = self.get_best_hyperparameters()[0].values
        logger.info('Tuner: best values %s', ', '.join(f'{k} {_format(v)}' for k, v in sorted(best.items())))


def _best_epoch(history: tf_keras.callbacks.History) -> Dict:
    losses = history.history[_VALIDATION_LOSS]
    best = int(np.nanargmin(losses)) if not np.all(np.isnan(losses)) else len(losses) - 1
    return {'val_loss': float(losses[best]), 'val_accuracy': float(history.history['val_accuracy'][best]),
            'epoch': best + 1}


def _format(value) -> str:
    return f'{value:.3g}' if isinstance(value, float) else str(value)


def default_directory(fn_args) -> Optional[str]:
    """KerasTuner's project folder: the executor's temporary folder, which TFX removes afterwards."""
    return os.path.join(fn_args.working_dir, 'keras_tuner') if fn_args.working_dir else None
