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


def build_classifier(params: TrainingConfig, num_classes: int) -> Classifier:
    if num_classes < 2:
        raise ValueError(f'a classifier needs at least two classes, got {num_classes}')
    backbone = backbones.get(params.backbone)
    if params.fine_tune_at >= backbone.num_layers and params.fine_tune_epochs:
        raise ValueError(f'fine_tune_at={params.fine_tune_at} but {backbone.name} has only '
                         f'{backbone.num_layers} layers: nothing would be fine-tuned')
    base = backbones.build_base(params)
    base.trainable = False
    size = params.image_size
    inputs = tf_keras.Input(shape=(size, size, 3), name=TRANSFORMED_IMAGE_KEY)
    x = _augmentation(params.seed)(inputs) if params.augmentation else inputs
    # training=False keeps BatchNorm in inference mode even when the base is unfrozen later,
    # so fine-tuning does not destroy the pretrained statistics.
    x = base(x, training=False)
    if backbone.outputs_feature_map:
        x = tf_keras.layers.GlobalAveragePooling2D(name='pool')(x)
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
    loss, metric = _loss_and_metric(classifier)
    classifier.model.compile(
        optimizer=tf_keras.optimizers.RMSprop(params.effective_fine_tune_learning_rate),
        loss=loss, metrics=[metric])


def calibrate_batchnorm(base: tf_keras.Model, images: tf.Tensor) -> None:
    """Sets every BatchNorm's moving statistics to those of `images` passed through the base.

    A randomly initialised base (weights: none) has moving mean 0 and variance 1 everywhere,
    so in inference mode nothing is normalised and the activations fade towards zero through
    the 16 blocks: a frozen base then gives the head almost nothing to learn from. One forward
    pass in training mode with momentum 0 makes each layer's statistics those of real inputs.
    """
    batchnorms = [layer for layer in base.submodules
                  if isinstance(layer, tf_keras.layers.BatchNormalization)]
    momentums = [layer.momentum for layer in batchnorms]
    was_trainable = base.trainable
    try:
        # A frozen BatchNorm ignores training=True in Keras 2, so unfreeze for this one pass.
        base.trainable = True
        for layer in batchnorms:
            layer.momentum = 0.0
        base(images, training=True)
    finally:
        base.trainable = was_trainable
        for layer, momentum in zip(batchnorms, momentums):
            layer.momentum = momentum
    logger.info('Calibrated %d BatchNorm layers of the randomly initialised base on %d images',
                len(batchnorms), int(images.shape[0]))


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
