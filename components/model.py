"""The classifier and its two training phases, as in TensorFlow's transfer-learning tutorial.

    image -> [augmentation] -> backbone (frozen, BatchNorm in inference mode)
          -> GlobalAveragePooling2D -> Dropout -> Dense logits

Two classes use one logit and binary cross-entropy; more use one logit per class and
sparse categorical cross-entropy. Phase 1 trains the head with Adam; phase 2 unfreezes the
backbone from `fine_tune_at` and continues with RMSprop at a lower learning rate.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components import backbones
from components.features import TRANSFORMED_IMAGE_KEY
from pipeline.config import TrainingConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Classifier:
    model: tf_keras.Model
    base: tf_keras.Model
    num_classes: int

    @property
    def binary(self) -> bool:
        return self.num_classes == 2


def build_classifier(params: TrainingConfig, num_classes: int, base: Optional[tf_keras.Model] = None,
                     feature_stats: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Classifier:
    """The classifier around `base` (built from params if not given).

    feature_stats (mean, std), from feature_statistics, adds a fixed standardisation of the
    pooled features before the head.
    """
    if num_classes < 2:
        raise ValueError(f'a classifier needs at least two classes, got {num_classes}')
    backbone = backbones.get(params.backbone)
    if params.fine_tune_at >= backbone.num_layers and params.fine_tune_epochs:
        raise ValueError(f'fine_tune_at={params.fine_tune_at} but {backbone.name} has only '
                         f'{backbone.num_layers} layers: nothing would be fine-tuned')
    base = base or backbones.build_base(params)
    base.trainable = False
    size = params.image_size
    inputs = tf_keras.Input(shape=(size, size, 3), name=TRANSFORMED_IMAGE_KEY)
    x = _augmentation(params.seed)(inputs) if params.augmentation else inputs
    # training=False keeps BatchNorm in inference mode even when the base is unfrozen later,
    # so fine-tuning does not destroy the pretrained statistics.
    x = base(x, training=False)
    if backbone.outputs_feature_map:
        x = tf_keras.layers.GlobalAveragePooling2D(name='pool')(x)
    if feature_stats is not None:
        mean, std = feature_stats
        x = tf_keras.layers.Rescaling(scale=(1 / std).tolist(), offset=(-mean / std).tolist(),
                                      name='standardize_features')(x)
    x = tf_keras.layers.Dropout(params.dropout, seed=params.seed, name='dropout')(x)
    logits = tf_keras.layers.Dense(1 if num_classes == 2 else num_classes, name='logits')(x)
    model = tf_keras.Model(inputs, logits, name=f'{backbone.name}_classifier')
    return Classifier(model=model, base=base, num_classes=num_classes)


def _augmentation(seed: int) -> tf_keras.Sequential:
    """The tutorial's augmentation; Keras preprocessing layers are no-ops at inference."""
    return tf_keras.Sequential([
        tf_keras.layers.RandomFlip('horizontal', seed=seed),
        tf_keras.layers.RandomRotation(0.2, seed=seed),
    ], name='augmentation')


def _loss_and_metric(classifier: Classifier):
    if classifier.binary:
        return (tf_keras.losses.BinaryCrossentropy(from_logits=True),
                tf_keras.metrics.BinaryAccuracy(threshold=0.0, name='accuracy'))
    return (tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            tf_keras.metrics.SparseCategoricalAccuracy(name='accuracy'))


def compile_for_head(classifier: Classifier, params: TrainingConfig) -> None:
    """Phase 1: only the head trains."""
    classifier.base.trainable = False
    loss, metric = _loss_and_metric(classifier)
    classifier.model.compile(optimizer=tf_keras.optimizers.Adam(params.learning_rate),
                             loss=loss, metrics=[metric])


def compile_for_fine_tuning(classifier: Classifier, params: TrainingConfig) -> None:
    """Phase 2: layers from fine_tune_at on train too, at the lower learning rate."""
    classifier.base.trainable = True
    for layer in classifier.base.layers[:params.fine_tune_at]:
        layer.trainable = False
    if params.weights == 'none':
        # The head standardises features of ~1e-12 (see feature_statistics); a BatchNorm beta
        # moved by one learning-rate step would add an offset a trillion times the signal.
        for layer in classifier.base.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.trainable = False
    loss, metric = _loss_and_metric(classifier)
    classifier.model.compile(
        optimizer=tf_keras.optimizers.RMSprop(params.effective_fine_tune_learning_rate),
        loss=loss, metrics=[metric])


def feature_statistics(base: tf_keras.Model, images: tf.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the base's pooled features on `images`.

    Needed for a randomly initialised base (weights: none): with BatchNorm statistics that
    have never seen data, the activations shrink block after block and the pooled features
    come out around 1e-11, which a Dense head trained at 1e-4 cannot use at all (chance
    accuracy). Their directions still carry information: standardised, they separate
    Fashion-MNIST classes about as well as a linear probe on them does (see bench/).
    """
    pooled = tf_keras.layers.GlobalAveragePooling2D()(base(images, training=False)).numpy().astype(np.float64)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    alive = std > 0
    logger.info('Standardising the random base\'s features (%d of %d vary; median std %.3g), '
                'measured on %d training images', alive.sum(), len(std),
                float(np.median(std[alive])) if alive.any() else 0.0, len(pooled))
    std[~alive] = 1.0  # a dead feature stays at zero instead of dividing by zero
    return mean, std


def probabilities(logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Logits -> class probabilities [N, num_classes] (also for the single binary logit)."""
    if num_classes == 2:
        positive = tf.sigmoid(logits)
        return tf.concat([1.0 - positive, positive], axis=-1)
    return tf.nn.softmax(logits, axis=-1)


def trainable_counts(model: tf_keras.Model) -> tuple:
    """(trainable, frozen) parameter counts, as model.summary() reports them."""
    trainable = sum(int(tf.size(w)) for w in model.trainable_weights)
    frozen = sum(int(tf.size(w)) for w in model.non_trainable_weights)
    return trainable, frozen
