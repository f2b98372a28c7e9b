"""The Trainer's `run_fn`: the two-phase transfer-learning recipe on the pipeline's data.

The input pipeline is in data.py, the model in model.py, the phases and checkpoints in
training.py, the devices and precision in devices.py, the exported signatures in serving.py.
Next to the model (the model_run folder) it writes TensorBoard logs, learning curves, the test
split's confusion matrix and per-class metrics, a training summary (reports.py), and the most
confident mistakes on the test split (misclassified.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components.example_gen import class_names as class_names_lib
from components.trainer import data as data_lib
from components.trainer import devices as devices_lib
from components.trainer import model as model_lib
from components.trainer import hyperparameters, misclassified, reports, serving, training
from components.trainer import recipe as recipe_lib
from components.trainer.frozen_bottom import FrozenBottom
from components.trainer.spec import AugmentationSpec, TrainingSpec

logger = logging.getLogger(__name__)


class _PhaseEvaluation:
    """Validation and test metrics after each phase.

    The test split is predicted once per phase; its last predictions also give the confusion
    matrix, instead of a second pass over the split after training. Phase 1's model is the
    head on the frozen backbones' features: given those of the eval and test splits
    (`features`, computed with the training features), it is evaluated on them, without
    running the backbones over the images again. Phase 2's model, when it was trained above the
    backbones' frozen bottoms (frozen_bottom.py), is evaluated there too, on their outputs.
    """

    def __init__(self, classifier: model_lib.Classifier, data: data_lib.TrainerData, counts: Dict[str, np.ndarray],
                 spec: TrainingSpec, features: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]] = None,
                 frozen_bottom: Optional[FrozenBottom] = None):
        self._classifier = classifier
        self._data = data
        self._counts = counts
        self._spec = spec
        self._features = features or {}
        self._frozen_bottom = frozen_bottom
        self._test_labels = None
        self._test_probabilities = None

    def __call__(self, phase: str) -> Dict[str, float]:
        source = self._source(phase)
        if source == 'features':
            model = model_lib.build_head_model(self._classifier)
        elif source == 'frozen bottoms':
            model = self._frozen_bottom.model(self._classifier)
        else:
            model = self._classifier.model
        if source != 'images':
            model_lib.compile_for_evaluation(self._classifier, model)
        metrics = {}
        if self._counts['eval'].sum():
            loss, accuracy = model.evaluate(self._inputs('eval', source), verbose=0)
            metrics['eval_accuracy'], metrics['eval_loss'] = float(accuracy), float(loss)
        if self._counts['test'].sum():
            labels = self._test_labels_read(source)
            logits = model.predict(self._inputs('test', source).map(lambda inputs, _: inputs), verbose=0)
            self._test_probabilities = model_lib.probabilities(logits, self._classifier.num_classes).numpy()
            metrics['test_accuracy'] = float(np.mean(self._test_probabilities.argmax(axis=1) == labels))
            metrics['test_loss'] = model_lib.mean_loss(
                self._classifier.binary, labels.astype(np.float32) if self._classifier.binary else labels, logits)
        logger.info('After %s: %s%s', phase, ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()),
                    {'features': ' (the head on the backbone features)',
                     'frozen bottoms': ' (above the frozen bottoms\' outputs)'}.get(source, ''))
        return metrics

    def _source(self, phase: str) -> str:
        """What the phase's model is evaluated on: 'features', 'frozen bottoms' or 'images'."""
        needed = [split for split in ('eval', 'test') if self._counts[split].sum()]
        if phase == training.HEAD and all(split in self._features for split in needed):
            return 'features'
        if phase == training.FINE_TUNE and self._frozen_bottom and all(map(self._frozen_bottom.has, needed)):
            return 'frozen bottoms'
        return 'images'

    def _inputs(self, split: str, source: str) -> tf.data.Dataset:
        if source == 'features':
            return data_lib.features_dataset(*self._features[split], self._spec, shuffle=False)
        if source == 'frozen bottoms':
            return self._frozen_bottom.dataset(split)
        return self._data.dataset(split)

    def _test_labels_read(self, source: str = 'images') -> np.ndarray:
        """The test split's labels in its stored order (the features' order too)."""
        if self._test_labels is None:
            labels = (self._features['test'][1] if source == 'features' else
                      np.concatenate([label.numpy() for _, label in self._data.dataset('test')]))
            self._test_labels = labels.astype(np.int64)
        return self._test_labels

    def _predict_test(self):
        logits = self._classifier.model.predict(self._data.dataset('test').map(lambda inputs, _: inputs), verbose=0)
        return self._test_labels_read(), logits

    def test_labels_and_probabilities(self):
        """(labels, class probabilities) of the test split by the final model."""
        if self._test_probabilities is None:  # every phase was done by an earlier, killed run
            labels, logits = self._predict_test()
            self._test_probabilities = model_lib.probabilities(logits, self._classifier.num_classes).numpy()
        return self._test_labels, self._test_probabilities

    def test_labels_and_predictions(self):
        """(labels, predicted classes) of the test split by the final model."""
        labels, probabilities = self.test_labels_and_probabilities()
        return labels, probabilities.argmax(axis=1)


def _checkpoint(fn_args: FnArgs) -> training.TrainingCheckpoint:
    """<pipeline root>/Trainer/checkpoints/<hash of the inputs>: found again by a re-run."""
    trainer_dir = os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip('/')))
    key = training.checkpoint_key(fn_args.train_files, fn_args.eval_files, fn_args.transform_output,
                                  fn_args.custom_config, fn_args.hyperparameters)
    return training.TrainingCheckpoint(os.path.join(trainer_dir, 'checkpoints', key))


def run_fn(fn_args: FnArgs) -> None:
    spec = TrainingSpec(**{key: fn_args.custom_config[key] for key in TrainingSpec.model_fields})
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf_keras.utils.set_random_seed(spec.seed)
    tuned = hyperparameters.values_of(fn_args.hyperparameters)
    if tuned:
        logger.info('Hyperparameters from the Tuner: %s', ', '.join(f'{k} {v}' for k, v in sorted(tuned.items())))
        spec = hyperparameters.apply(spec, tuned)
    names = class_names_lib.read(class_names_lib.examples_uri_of_split_files(fn_args.train_files[0]))
    logger.info('Training on %d classes: %s', len(names), ', '.join(names))
    counts = {split: np.bincount(data_lib.labels(fn_args, split), minlength=len(names)) for split in data_lib.SPLITS}
    data = data_lib.TrainerData(fn_args, spec, binary=len(names) == 2, counts={s: int(c.sum()) for s, c in counts.items()})
    try:
        _train_and_export(fn_args, spec, names, counts, data, tuned)
    finally:
        data.close()


@dataclasses.dataclass
class _Trained:
    """What training left: the spec as the recipe completed it, the model, and how it got there."""
    spec: TrainingSpec
    classifier: model_lib.Classifier
    state: training.TrainingState
    evaluation: _PhaseEvaluation
    choices: Dict
    head_candidates: List
    augmentation_trials: List
    # The head's standardisation of a random backbone's features (model.feature_statistics).
    feature_stats: Optional[Tuple[np.ndarray, np.ndarray]]


def _train_and_export(fn_args: FnArgs, configured: TrainingSpec, names: List[str],
                      counts: Dict[str, np.ndarray], data: data_lib.TrainerData, tuned: Dict) -> None:
    checkpoint = _checkpoint(fn_args)
    with devices_lib.training_devices(configured) as devices:
        trained = _train(fn_args, configured, names, counts, data, checkpoint)
    # Exported outside the strategy's scope and policy, so the serving module's own variable
    # (the class names, strings) and layers are ordinary ones, not one copy per replica.
    spec = trained.spec
    serving.export(_float32_model(trained, devices.policy), data.transform_output, names, fn_args.serving_model_dir,
                   spec.backbones)
    recipe_summary = {
        'recipe': spec.recipe,
        'chosen': trained.choices,
        'head_candidates': [c.as_dict() for c in trained.head_candidates],
        'augmentation_candidates': trained.augmentation_trials,
        'kept_head_only_model': trained.state.kept_head_only_model,
        'hyperparameters_from_tuner': tuned,
        'reproduce_with': {'recipe': 'tutorial', **trained.choices, **_tuned_as_config(spec, tuned)},
    }
    _write_reports(fn_args.model_run_dir, spec, names, counts, trained.state, trained.evaluation, recipe_summary,
                   devices.summary())
    if counts['test'].sum():  # the report's thumbnails of the most confident mistakes
        misclassified.write(fn_args.model_run_dir, *trained.evaluation.test_labels_and_probabilities(), names,
                            misclassified.raw_examples(fn_args, data_lib.split_files(fn_args, 'test'),
                                                       data.transform_output.raw_metadata.schema, spec.batch_size))
    checkpoint.clear()


def _float32_model(trained: _Trained, policy: str) -> tf_keras.Model:
    """The trained model, in float32: what is exported whatever the training precision.

    TFLite has no bfloat16 and few float16 kernels (TFLiteExport converts the export), and a
    CPU serving mixed-precision casts pays for them; the weights are float32 under any policy,
    so a float32 copy of the model with them computes what the trained one does, in float32.
    """
    if policy == 'float32':
        return trained.classifier.model
    copy = model_lib.build_classifier(trained.spec, trained.classifier.num_classes,
                                      bases=model_lib.build_bases(trained.spec, load_weights=False),
                                      feature_stats=trained.feature_stats).model
    copy.set_weights(trained.classifier.model.get_weights())
    return copy


def _train(fn_args: FnArgs, configured: TrainingSpec, names: List[str], counts: Dict[str, np.ndarray],
           data: data_lib.TrainerData, checkpoint: training.TrainingCheckpoint) -> _Trained:
    """Both phases, or what an interrupted run left of them (within devices.training_devices)."""
    train, validation = data.dataset('train', shuffle=True), data.dataset('eval')
    spec = recipe_lib.resolve(configured)
    bases = model_lib.build_bases(spec)
    # Un-augmented features: the augmentation (perhaps still to be chosen) is not part of it.
    extractor = model_lib.build_feature_extractor(spec.model_copy(update=dict(augmentation=None)), bases)
    feature_stats = None
    if spec.any_random_backbone:
        logger.warning('weights: none: a backbone is randomly initialised, so this is not transfer '
                       'learning and accuracy will be low; use it to test the pipeline only.')
        feature_stats = model_lib.feature_statistics(
            extractor, data_lib.sample_inputs(data.dataset('train', cache=False)))
    weights = None
    if spec.class_weight == 'auto':
        weights = training.class_weights(counts['train'])
        logger.info('Class weights: %s', ', '.join(f'{names[c]} {w:.3f}' for c, w in weights.items()))

    has_validation = bool(counts['eval'].sum())
    head_features = validation_features = train_arrays = None
    evaluation_features = {}  # phase 1's model evaluated on them (_PhaseEvaluation)
    features_seconds = 0.0
    on_features = spec.head_on_features or spec.augmentation is None
    frozen_bottom = None
    if spec.cache_features and spec.head_epochs != 0:
        started = time.time()
        if on_features:  # phase 1 trains the head alone on features of un-augmented images
            if spec.fine_tune_epochs and (spec.augmentation is None or spec.is_unset('augmentation')):
                frozen_bottom = FrozenBottom.plan(spec, bases, int(sum(c.sum() for c in counts.values())))
            train_arrays, evaluation_features = _features_of_splits(extractor, frozen_bottom, data, counts)
            head_features = (data_lib.features_dataset(*train_arrays, spec, shuffle=True),
                             data_lib.features_dataset(*evaluation_features['eval'], spec, shuffle=False)
                             if has_validation else None)
        elif has_validation:  # augmented training images change every epoch, validation ones do not
            validation_features = data_lib.features_dataset(
                *data_lib.feature_arrays(extractor, data, 'eval'), spec, shuffle=False)
        features_seconds = time.time() - started
        logger.info('Backbone features computed once in %.1f s', features_seconds)

    saved = checkpoint.load()
    if saved and saved.recipe_choices:  # a resumed run trains as the interrupted one chose
        spec, head_candidates, augmentation_trials = spec.model_copy(update=_spec_values(saved.recipe_choices)), [], []
    else:
        spec, head_candidates, augmentation_trials = _auto_choices(spec, data, bases, names, feature_stats, weights,
                                                                   head_features, train_arrays)
        features_seconds += sum(c.seconds for c in head_candidates) + sum(t['seconds'] for t in augmentation_trials)
    choices = recipe_lib.choices_made(configured, spec)
    logger.info('Recipe %s%s', spec.recipe, ': ' + ', '.join(f'{k} {v}' for k, v in choices.items()) if choices else '')

    classifier = model_lib.build_classifier(spec, len(names), bases=bases, feature_stats=feature_stats)
    if spec.augmentation is not None:  # augmented images differ every epoch: phase 2 needs them
        frozen_bottom = None
    fine_tune_on = None
    if frozen_bottom:
        fine_tune_on = (frozen_bottom.model(classifier), frozen_bottom.dataset('train', shuffle=True),
                        frozen_bottom.dataset('eval') if has_validation else None)
    evaluate_phase = _PhaseEvaluation(classifier, data, counts, spec, evaluation_features, frozen_bottom)
    state = training.train_two_phases(
        classifier, spec, train, validation, checkpoint, weights=weights,
        callbacks=[tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
        evaluate_phase=evaluate_phase, head_features=head_features, validation_features=validation_features,
        features_seconds=features_seconds, train_images=int(counts['train'].sum()), recipe_choices=choices,
        trained_head=_chosen_head(head_candidates, choices), fine_tune_on=fine_tune_on)
    return _Trained(spec, classifier, state, evaluate_phase, choices, head_candidates, augmentation_trials,
                    feature_stats)


def _features_of_splits(extractor: tf_keras.Model, frozen_bottom: Optional[FrozenBottom],
                        data: data_lib.TrainerData, counts: Dict[str, np.ndarray]):
    """(the training split's (features, labels), {eval, test: (features, labels)}) from one
    backbone pass over each split, which also fills frozen_bottom (if any) with the bottoms'
    outputs."""
    arrays = {}
    for split in data_lib.SPLITS:
        if split != 'train' and not counts[split].sum():
            continue
        if frozen_bottom is None:
            arrays[split] = data_lib.feature_arrays(extractor, data, split)
            continue
        (features, *bottom_outputs), labels = data_lib.output_arrays(frozen_bottom.extractor(), data, split)
        frozen_bottom.add(split, bottom_outputs, labels)
        arrays[split] = features, labels
    return arrays.pop('train'), arrays


def _auto_choices(spec: TrainingSpec, data: data_lib.TrainerData, bases, names: List[str], feature_stats,
                  weights, head_features, train_arrays) -> Tuple[TrainingSpec, List, List]:
    """What recipe auto still has to choose, chosen on the cached features: the head's keys
    (recipe.choose_head), then phase 2's augmentation (recipe.choose_augmentation).

    Returns the spec with the choices, the head candidates and the augmentation trials."""
    if not (recipe_lib.unchosen_head_keys(spec) or spec.is_unset('augmentation')):
        return spec, [], []
    if head_features is None:
        raise ValueError('recipe: auto chooses the head and the augmentation on cached backbone features; '
                         'with cache_features: false or head_on_features: false set learning_rate, dropout, '
                         'head_l2, head_epochs and augmentation yourself, or use recipe: tutorial')
    feature_size = int(train_arrays[0].shape[-1])
    head_functions = dict(
        build_head=lambda s: model_lib.build_candidate_head(s, len(names), feature_size, feature_stats),
        compile_head=lambda model, s: model_lib.compile_head(model, s, binary=len(names) == 2))
    spec, head_candidates = recipe_lib.choose_head(
        spec, train_features=head_features[0], validation_features=head_features[1], class_weight=weights,
        **head_functions)
    if not spec.is_unset('augmentation'):
        return spec, head_candidates, []
    if head_features[1] is None:  # nothing to choose on
        return (spec.model_copy(update=dict(augmentation=recipe_lib.AUTO_WITHOUT_VALIDATION['augmentation'])),
                head_candidates, [])
    best_loss = min((c.val_loss for c in head_candidates), default=None)
    if best_loss is None:  # the config set every head key: measure that head without augmentation
        best_loss = recipe_lib.head_validation_loss(spec, head_features, weights, **head_functions)

    def augmented(candidate):
        augmenting = model_lib.build_feature_extractor(spec.model_copy(update=dict(augmentation=candidate)), bases)
        return data_lib.feature_arrays(augmenting, data, 'train', augmented=True)[0]

    spec, augmentation_trials = recipe_lib.choose_augmentation(
        spec, train_features=train_arrays, validation_features=head_features[1], augmented_features=augmented,
        without_augmentation_loss=best_loss, class_weight=weights, **head_functions)
    return spec, head_candidates, augmentation_trials


def _chosen_head(candidates: List[recipe_lib.HeadCandidate], choices: Dict):
    """(weights, history) of the head recipe auto chose, when it chose the epochs too (else the
    configured head_epochs are trained)."""
    best = next((c for c in candidates if c.weights is not None), None)
    if best is None or choices.get('head_epochs') != best.best_epoch:
        return None
    return best.weights, best.history


def _spec_values(choices: Dict) -> Dict:
    """Recorded choices (config values) as spec values: augmentation false is None."""
    values = dict(choices)
    if 'augmentation' in values:
        values['augmentation'] = AugmentationSpec(**values['augmentation']) if values['augmentation'] else None
    return values


def _tuned_as_config(spec: TrainingSpec, tuned: Dict) -> Dict:
    """The Tuner's values as config keys (hidden_units a list, fine_tune_at per backbone)."""
    keys = {key: getattr(spec, key) for key in tuned if key != 'fine_tune_at'}
    if 'fine_tune_at' in tuned:
        keys['fine_tune_at'] = tuned['fine_tune_at']
    return keys


def _write_reports(directory: str, spec: TrainingSpec, names: List[str], counts: Dict[str, np.ndarray],
                   state: training.TrainingState, evaluation: _PhaseEvaluation, recipe_summary: Dict,
                   devices: Dict) -> None:
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
        'recipe': recipe_summary,
        'devices': devices,
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
