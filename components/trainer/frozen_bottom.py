"""Phase 2 above each backbone's frozen bottom, whose output is computed once.

Phase 2 trains each backbone from its fine_tune_at on; the layers below stay frozen and in
inference mode. Without augmentation an image's activations where they end are the same in
every epoch, so they are computed once, in the backbone pass that gives phase 1 its features,
and phase 2 runs only the layers above them: the same model (the classifier's own layers, so
training this trains it) for much less work. MobileNetV2 at 160 px with fine_tune_at 100: the
frozen bottom is three quarters of a forward pass (bench/results/frozen_bottom.md).

The cut is the highest layer at or below fine_tune_at where one tensor carries everything
the layers above read. MobileNetV2's layer 100 is inside a residual block whose shortcut
also crosses it; the block's first layer, 98, is such a cut: the two frozen layers between
it and fine_tune_at run every epoch, in inference mode, as they did.

Used only when it fits: every backbone is a Keras functional model (not a TF-Hub layer) with
such a cut below its fine_tune_at, and the activations of all splits fit in
input_cache_max_gb.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import backbones
from components.trainer import data as data_lib
from components.trainer import model as model_lib
from components.trainer.spec import TrainingSpec

logger = logging.getLogger(__name__)


def find_cut(base: tf_keras.Model, start: int) -> Optional[Tuple[int, tf.Tensor]]:
    """(k, tensor): the highest k in [2, start] where the outputs of base.layers[:k] read by
    base.layers[k:] are one tensor, and that tensor; None when there is no such k (a TF-Hub
    backbone is one layer)."""
    if not hasattr(base, '_nodes_by_depth'):
        return None
    index = {id(layer): i for i, layer in enumerate(base.layers)}
    reads = []  # (index of the reading layer, index of the producing layer, tensor)
    for nodes in base._nodes_by_depth.values():  # noqa: SLF001  (the model's own graph)
        for node in nodes:
            if id(node.layer) not in index:
                continue
            for tensor in tf.nest.flatten(node.keras_inputs):
                producer = tensor._keras_history.layer  # noqa: SLF001
                reads.append((index[id(node.layer)], index.get(id(producer), -1), tensor))
    for k in range(min(start, len(base.layers) - 1), 1, -1):
        crossing = {id(tensor): tensor for reader, producer, tensor in reads if producer < k <= reader}
        if len(crossing) == 1:
            return k, next(iter(crossing.values()))
    return None


class FrozenBottom:
    """Each backbone split at its cut: the bottom's outputs of every split, and phase 2's model
    and datasets on them. Build it with plan(); fill it with extractor() and add()."""

    def __init__(self, spec: TrainingSpec, bottoms: Dict[str, tf_keras.Model], tops: Dict[str, tf_keras.Model]):
        self._spec = spec
        self._bottoms, self._tops = bottoms, tops
        self._arrays: Dict[str, Tuple[Dict[str, np.ndarray], np.ndarray]] = {}
        self._extractor: Optional[tf_keras.Model] = None

    @classmethod
    def plan(cls, spec: TrainingSpec, bases: Dict[str, tf_keras.Model], images: int) -> Optional['FrozenBottom']:
        """The split of every backbone, or None (and why, in the log) when phase 2 must run on
        the images: a backbone without a cut, or activations above input_cache_max_gb."""
        bottoms, tops, described, values = {}, {}, [], 0
        for backbone in spec.backbones:
            base = bases[backbone.key]
            start = backbones.fine_tune_index(base, backbone.effective_fine_tune_at)
            cut = find_cut(base, start)
            if cut is None:
                logger.info('Phase 2 runs on the images: %s has no single tensor below its fine_tune_at '
                            'to compute once', backbone.name)
                return None
            k, tensor = cut
            bottoms[backbone.key] = tf_keras.Model(base.inputs, tensor, name=f'{base.name}_frozen_bottom')
            tops[backbone.key] = tf_keras.Model(tensor, base.outputs, name=f'{base.name}_top')
            shape = tuple(int(d) for d in tensor.shape[1:])
            values += int(np.prod(shape))
            described.append(f'{backbone.name} below layer {k} ({base.layers[k].name}), {"x".join(map(str, shape))}')
        gigabytes = 4 * values * images / 2 ** 30
        if gigabytes > spec.input_cache_max_gb:
            logger.info('Phase 2 runs on the images: the frozen layers\' output of %d images would take %.2f GB, '
                        'more than input_cache_max_gb %.1f', images, gigabytes, spec.input_cache_max_gb)
            return None
        logger.info('Frozen bottom: %s; %.2f GB for %d images, computed with the features', '; '.join(described),
                    gigabytes, images)
        return cls(spec, bottoms, tops)

    def extractor(self) -> tf_keras.Model:
        """Inputs -> [the head's features, each backbone's bottom output (config order)]: one pass.
        The same model every call (its traced function is reused: data.output_arrays)."""
        if self._extractor is None:
            self._extractor = self._build_extractor()
        return self._extractor

    def _build_extractor(self) -> tf_keras.Model:
        spec = self._spec
        inputs = {b.key: tf_keras.Input((b.image_size, b.image_size, 3), name=b.key) for b in spec.backbones}
        cut = {b.key: self._bottoms[b.key](inputs[b.key], training=False) for b in spec.backbones}
        features = model_lib.pooled_features(spec, self._tops, cut)
        return tf_keras.Model(inputs, [features, *(cut[b.key] for b in spec.backbones)], name='features_and_bottoms')

    def add(self, split: str, bottom_outputs: List[np.ndarray], labels: np.ndarray) -> None:
        """A split's bottom outputs, as extractor() gave them, in the split's stored order."""
        self._arrays[split] = ({b.key: array for b, array in zip(self._spec.backbones, bottom_outputs, strict=True)},
                               labels)

    def has(self, split: str) -> bool:
        return split in self._arrays

    def model(self, classifier: model_lib.Classifier) -> tf_keras.Model:
        """The classifier from the bottoms' outputs on: each backbone's top and the head, the
        classifier's own layers (training it trains the classifier)."""
        spec = self._spec
        inputs = {b.key: tf_keras.Input(self._tops[b.key].input_shape[1:], name=b.key) for b in spec.backbones}
        x = model_lib.pooled_features(spec, self._tops, inputs)
        for layer in classifier.head_layers:
            x = layer(x)
        return tf_keras.Model(inputs, x, name=f'{classifier.model.name}_above_frozen_bottom')

    def dataset(self, split: str, shuffle: bool = False) -> tf.data.Dataset:
        """The split's bottom outputs and labels, batched (and shuffled) as the images would be."""
        arrays, labels = self._arrays[split]
        examples = tf.data.Dataset.from_tensor_slices((arrays, labels))
        return data_lib.batched(examples, self._spec, len(labels), shuffle).prefetch(tf.data.AUTOTUNE)
