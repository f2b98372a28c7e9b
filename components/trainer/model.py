"""The classifier and its two training phases, as in TensorFlow's transfer-learning tutorial.

    image(s) -> [augmentation] -> backbone(s), frozen, BatchNorm in inference mode
             -> pooling where a backbone outputs a feature map -> concatenate (several backbones)
             -> [hidden Dense layers] -> Dropout -> Dense logits

Several backbones run side by side on the same image, never one after another: a
backbone's output is a grid of features, not an image another backbone could read.
Two classes use one logit and binary cross-entropy; more use one logit per class and sparse
categorical cross-entropy. Phase 1 trains the head with Adam; phase 2 unfreezes each backbone
from its `fine_tune_at` and continues with RMSprop at a lower learning rate.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import backbones
from components.trainer.augmentation import SharedAugmentation
from components.trainer.spec import BackboneSpec, TrainingSpec

logger = logging.getLogger(__name__)

_POOLING = {
    'gap': tf_keras.layers.GlobalAveragePooling2D,
    'max': tf_keras.layers.GlobalMaxPooling2D,
    'flatten': tf_keras.layers.Flatten,
}


@dataclasses.dataclass
class Classifier:
    model: tf_keras.Model
    # Input key -> backbone, in the config's order.
    bases: Dict[str, tf_keras.Model]
    specs: List[BackboneSpec]
    num_classes: int
    # Inputs -> the vector the head sees (shares its layers with `model`).
    features: Optional[tf_keras.Model] = None
    # The layers after `features`, in order (shared with `model`).
    head_layers: List[tf_keras.layers.Layer] = dataclasses.field(default_factory=list)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2


def build_bases(spec: TrainingSpec, load_weights: bool = True) -> Dict[str, tf_keras.Model]:
    """Every backbone of the config, frozen, with unique names (a model may hold two VGG16s)."""
    bases = {}
    for backbone in spec.backbones:
        base = backbones.build_base(backbone, load_weights=load_weights)
        if len(spec.backbones) > 1:
            base._name = f'{backbone.key}_{base.name}'  # noqa: SLF001  (Keras has no public rename)
        base.trainable = False
        bases[backbone.key] = base
    return bases


def pooling_decision(head: str, feature_map: bool, backbone: str) -> Tuple[Optional[str], str]:
    """(pooling to add or None, why), for `head` and the backbone's output kind."""
    if not feature_map:
        if head != 'auto':
            raise ValueError(
                f'head: {head} does not apply to {backbone}, whose output is already a pooled vector '
                f'(N, C): {head} turns a feature map (N, h, w, C) into a vector. Use head: auto.')
        return None, 'its output is already a pooled vector (N, C), so nothing is added'
    if head == 'auto':
        return 'gap', ('its output is a feature map (N, h, w, C); head: auto pools it with global '
                       'average pooling (one value per channel)')
    return head, f'its output is a feature map (N, h, w, C); head: {head} was asked for'


def build_feature_extractor(spec: TrainingSpec, bases: Dict[str, tf_keras.Model]) -> tf_keras.Model:
    """Inputs (one per backbone) -> the vector the head sees (pooled, concatenated)."""
    inputs = {b.key: tf_keras.Input((b.image_size, b.image_size, 3), name=b.key) for b in spec.backbones}
    views = dict(inputs)
    if spec.augmentation:
        a = spec.augmentation
        views = SharedAugmentation(a.flip, a.rotation, a.zoom, a.contrast, seed=spec.seed,
                                   name='augmentation')(views)
    return tf_keras.Model(inputs, pooled_features(spec, bases, views), name='features')


def pooled_features(spec: TrainingSpec, bases: Dict[str, tf_keras.Model], views: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Each backbone (or what stands for it: frozen_bottom's top part) on its view, pooled where
    it outputs a feature map, concatenated: the vector the head sees."""
    features = []
    for backbone in spec.backbones:
        base = bases[backbone.key]
        # training=False keeps BatchNorm in inference mode even when the base is unfrozen later,
        # so fine-tuning does not destroy the pretrained statistics.
        x = base(views[backbone.key], training=False)
        pooling, _ = pooling_decision(spec.head, backbones.output_is_feature_map(base), backbone.name)
        if pooling:
            suffix = f'_{backbone.key}' if len(spec.backbones) > 1 else ''
            x = _POOLING[pooling](name=f'{pooling}{suffix}')(x)
        features.append(x)
    return tf_keras.layers.Concatenate(name='concatenate')(features) if len(features) > 1 else features[0]


def feature_statistics(extractor: tf_keras.Model, inputs: Dict[str, tf.Tensor]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the head's input, measured on `inputs`.

    Needed for a randomly initialised base (weights: none): with BatchNorm statistics that
    have never seen data, the activations shrink block after block and the pooled features
    come out around 1e-12, which a Dense head trained at 1e-4 cannot use at all (chance
    accuracy). Their directions still carry information; standardised, they are usable.
    """
    return standardisation(extractor(inputs, training=False).numpy())


def standardisation(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature of [N, features] for the head's standardisation (see
    feature_statistics); a dead feature (std 0) gets std 1 and stays at zero."""
    pooled = features.astype(np.float64)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    alive = std > 0
    logger.info('Standardising the random base\'s features (%d of %d vary; median std %.3g), '
                'measured on %d training images', alive.sum(), len(std),
                float(np.median(std[alive])) if alive.any() else 0.0, len(pooled))
    std[~alive] = 1.0  # a dead feature stays at zero instead of dividing by zero
    return mean, std


def build_classifier(spec: TrainingSpec, num_classes: int, bases: Optional[Dict[str, tf_keras.Model]] = None,
                     feature_stats: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Classifier:
    """The classifier around the configured backbones (built here if not given).

    feature_stats (mean, std), from feature_statistics, adds a fixed standardisation of the
    head's input.
    """
    if num_classes < 2:
        raise ValueError(f'a classifier needs at least two classes, got {num_classes}')
    bases = bases or build_bases(spec)
    if spec.fine_tune_epochs:
        for backbone in spec.backbones:  # fail before training, not after phase 1
            backbones.fine_tune_index(bases[backbone.key], backbone.effective_fine_tune_at)
    extractor = build_feature_extractor(spec, bases)
    head_layers = _head_layers(spec, num_classes, feature_stats)
    x = extractor.outputs[0]
    for layer in head_layers:
        x = layer(x)
    name = '_'.join(b.name for b in spec.backbones) + '_classifier'
    model = tf_keras.Model(extractor.inputs, x, name=name)
    return Classifier(model=model, bases=bases, specs=list(spec.backbones), num_classes=num_classes,
                      features=extractor, head_layers=head_layers)


def _head_layers(spec: TrainingSpec, num_classes: int,
                 feature_stats: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> List[tf_keras.layers.Layer]:
    """[standardisation] -> [hidden Dense layers] -> Dropout -> Dense logits, L2 on the Dense kernels."""
    layers = []
    if feature_stats is not None:
        mean, std = feature_stats
        # float32 under any policy: scales of 1e12 overflow float16.
        layers.append(tf_keras.layers.Rescaling(scale=(1 / std).tolist(), offset=(-mean / std).tolist(),
                                                name='standardize_features', dtype='float32'))
    regularizer = tf_keras.regularizers.L2(spec.head_l2) if spec.head_l2 else None
    layers += [tf_keras.layers.Dense(units, activation='relu', kernel_regularizer=regularizer, name=f'hidden_{index}')
               for index, units in enumerate(spec.hidden_units)]
    layers.append(tf_keras.layers.Dropout(spec.dropout, seed=spec.seed, name='dropout'))
    # float32 under a mixed policy too (devices.py): logits, losses and probabilities stay float32.
    layers.append(tf_keras.layers.Dense(1 if num_classes == 2 else num_classes, kernel_regularizer=regularizer,
                                        name='logits', dtype='float32'))
    return layers


def build_candidate_head(spec: TrainingSpec, num_classes: int, feature_size: int,
                         feature_stats: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> tf_keras.Model:
    """A head of its own (feature vector -> logits) with spec's settings, for trying them out."""
    inputs = tf_keras.Input((feature_size,), name='features')
    x = inputs
    for layer in _head_layers(spec, num_classes, feature_stats):
        x = layer(x)
    return tf_keras.Model(inputs, x, name='candidate_head')


def build_head_model(classifier: Classifier) -> tf_keras.Model:
    """Feature vector -> logits, with the classifier's own head layers (training it trains them)."""
    inputs = tf_keras.Input(classifier.features.output_shape[1:], name='features')
    x = inputs
    for layer in classifier.head_layers:
        x = layer(x)
    return tf_keras.Model(inputs, x, name='head')


def compile_for_evaluation(classifier: Classifier, model: tf_keras.Model) -> None:
    """The classifier's loss and accuracy on another model sharing its layers (e.g. the head alone)."""
    loss, metric = _loss_and_metric(classifier)
    model.compile(loss=loss, metrics=[metric])


def mean_loss(binary: bool, labels: np.ndarray, logits: np.ndarray) -> float:
    """The compiled loss's figure (its mean over the examples) on predictions made outside
    Keras' loops. Its own per-example loss object: a compiled one refuses to average under a
    distribution strategy until Keras itself has used it."""
    loss, _ = _loss_and_metric_for(binary, reduction=tf_keras.losses.Reduction.NONE)
    return float(np.mean(loss(labels, logits)))


def _loss_and_metric(classifier: Classifier):
    return _loss_and_metric_for(classifier.binary)


def _loss_and_metric_for(binary: bool, reduction: str = tf_keras.losses.Reduction.AUTO):
    if binary:
        return (tf_keras.losses.BinaryCrossentropy(from_logits=True, reduction=reduction),
                tf_keras.metrics.BinaryAccuracy(threshold=0.0, name='accuracy'))
    return (tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
            tf_keras.metrics.SparseCategoricalAccuracy(name='accuracy'))


def freeze_for_head(classifier: Classifier) -> None:
    """Phase 1: only the head trains."""
    for base in classifier.bases.values():
        base.trainable = False


def unfreeze_for_fine_tuning(classifier: Classifier) -> None:
    """Phase 2: each backbone's layers from its fine_tune_at on train too."""
    for spec in classifier.specs:
        base = classifier.bases[spec.key]
        start = backbones.fine_tune_index(base, spec.effective_fine_tune_at)
        base.trainable = True
        for layer in base.layers[:start]:
            layer.trainable = False
        if spec.weights == 'none' and spec.name != 'hub':
            # The head standardises features of ~1e-12 (see feature_statistics); a BatchNorm beta
            # moved by one learning-rate step would add an offset a trillion times the signal.
            for layer in base.layers:
                if isinstance(layer, tf_keras.layers.BatchNormalization):
                    layer.trainable = False


_OPTIMIZERS = {
    'adam': tf_keras.optimizers.Adam,
    'rmsprop': tf_keras.optimizers.RMSprop,
    'sgd': lambda learning_rate: tf_keras.optimizers.SGD(learning_rate, momentum=0.9),
}


def compile_for_head(classifier: Classifier, spec: TrainingSpec,
                     model: Optional[tf_keras.Model] = None) -> tf_keras.Model:
    """Phase 1 (the tutorial: Adam at 1e-4); `model` may be the head alone (build_head_model)."""
    freeze_for_head(classifier)
    model = model or classifier.model
    compile_head(model, spec, classifier.binary)
    return model


def compile_head(model: tf_keras.Model, spec: TrainingSpec, binary: bool) -> None:
    """Phase 1's optimizer, loss and metric on any model ending in the head."""
    loss, metric = _loss_and_metric_for(binary)
    model.compile(optimizer=_OPTIMIZERS[spec.head_optimizer](spec.learning_rate), loss=loss, metrics=[metric],
                  jit_compile=spec.jit_compile)


def fine_tune_learning_rate(spec: TrainingSpec, steps_per_epoch: int):
    """Phase 2's learning rate: constant, or linear warm-up from zero then cosine decay to zero."""
    rate = spec.effective_fine_tune_learning_rate
    if spec.fine_tune_schedule != 'cosine':
        return rate
    total = max(1, spec.fine_tune_epochs * steps_per_epoch)
    warmup = min(spec.fine_tune_warmup_epochs * steps_per_epoch, total - 1)
    if not warmup:
        return tf_keras.optimizers.schedules.CosineDecay(rate, decay_steps=total)
    return tf_keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=rate,
                                                     warmup_steps=warmup)


def compile_for_fine_tuning(classifier: Classifier, spec: TrainingSpec, steps_per_epoch: int = 1,
                            model: Optional[tf_keras.Model] = None) -> None:
    """Phase 2 (the tutorial: RMSprop at a tenth of phase 1's learning rate, constant); `model`
    may be the classifier above the backbones' frozen bottoms (frozen_bottom.py)."""
    unfreeze_for_fine_tuning(classifier)
    loss, metric = _loss_and_metric(classifier)
    (model or classifier.model).compile(
        optimizer=_OPTIMIZERS[spec.fine_tune_optimizer](fine_tune_learning_rate(spec, steps_per_epoch)),
        loss=loss, metrics=[metric], jit_compile=spec.jit_compile)


def probabilities(logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Logits -> class probabilities [N, num_classes] (also for the single binary logit)."""
    if num_classes == 2:
        positive = tf.sigmoid(logits)
        return tf.concat([1.0 - positive, positive], axis=-1)
    return tf.nn.softmax(logits, axis=-1)


def trainable_counts(model: tf_keras.Model) -> Tuple[int, int]:
    """(trainable, frozen) parameter counts, as model.summary() reports them."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen
