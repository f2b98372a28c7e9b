"""The Trainer's input: the splits as ({input key: images}, label) datasets, and their labels.

The Trainer reads the raw examples and applies Transform's graph in its input pipeline (the
same graph the exported model embeds), so decoded float images are never written to disk:
160 px float32 images would take ~300 KB each.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.public import tfxio

from components.example_gen import class_names as class_names_lib
from components.features import LABEL_KEY
from components.trainer import devices
from components.trainer.spec import TrainingSpec

logger = logging.getLogger(__name__)

_SHUFFLE_BUFFER = 1024
_STATISTICS_IMAGES = 256
# The traced feature functions of each extractor (see _feature_function).
_FEATURE_FUNCTIONS: 'weakref.WeakKeyDictionary[tf_keras.Model, Dict[bool, Callable]]' = weakref.WeakKeyDictionary()
SPLITS = ('train', 'eval', 'test')


class TrainerData:
    """The splits as ({input key: images}, label) datasets: raw examples -> transform graph.

    Decoding and resizing every image again in every epoch makes training input-bound (the
    tutorial's script is), so the transformed images are cached after the first pass: in
    memory when they fit in input_cache_max_gb, else in a file in a temporary folder removed
    at the end.
    """

    def __init__(self, fn_args: FnArgs, spec: TrainingSpec, binary: bool,
                 counts: Dict[str, int]):
        self._fn_args = fn_args
        self._spec = spec
        self._binary = binary
        self.transform_output = tft.TFTransformOutput(fn_args.transform_output)
        self._counts = counts
        self.cache_mode = self._cache_mode(counts)
        self._cache_dir = tempfile.mkdtemp(prefix='input-cache-') if self.cache_mode == 'disk' else None
        self._datasets: Dict[tuple, tf.data.Dataset] = {}
        self._cached_examples: Dict[str, tf.data.Dataset] = {}

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
        if cache:
            dataset = batched(self._cached(split), self._spec, self._counts[split], shuffle)
        else:
            dataset = self._transformed(split, shuffle)
            if tf.distribute.get_strategy().num_replicas_in_sync > 1:
                dataset = devices.replica_batches(dataset.unbatch(), self._spec.batch_size, self._counts[split],
                                                  training=shuffle)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _cached(self, split: str) -> tf.data.Dataset:
        """The split's transformed examples one by one, cached: one cache per split, shared by
        every dataset built on it (the backbone-feature pass fills it, phase 2's shuffled
        epochs and validation read it), so each image is decoded once per Trainer run."""
        if split not in self._cached_examples:
            cache_file = os.path.join(self._cache_dir, split) if self._cache_dir else ''
            self._cached_examples[split] = self._transformed(split, shuffle=False).unbatch().cache(cache_file)
        return self._cached_examples[split]

    def _transformed(self, split: str, shuffle: bool) -> tf.data.Dataset:
        """Batches of the split through the transform graph (read in a shuffled order if asked)."""
        raw = self._fn_args.data_accessor.tf_dataset_factory(
            split_files(self._fn_args, split),
            tfxio.TensorFlowDatasetOptions(batch_size=self._spec.batch_size, num_epochs=1,
                                           shuffle=shuffle, shuffle_seed=self._spec.seed,
                                           shuffle_buffer_size=_SHUFFLE_BUFFER, drop_final_batch=False),
            self.transform_output.raw_metadata.schema)
        transform_layer = self.transform_output.transform_features_layer()
        keys = [backbone.key for backbone in self._spec.backbones]
        binary = self._binary

        def transform(raw_features):
            transformed = transform_layer(raw_features)
            label = transformed[LABEL_KEY]
            return {key: transformed[key] for key in keys}, tf.cast(label, tf.float32) if binary else label

        return raw.map(transform, num_parallel_calls=tf.data.AUTOTUNE)


def batched(examples: tf.data.Dataset, spec: TrainingSpec, count: int, shuffle: bool) -> tf.data.Dataset:
    """`count` examples, one at a time, in training batches (shuffled anew every epoch) or
    evaluation ones: one order for cached images and for anything computed from them in
    their stored order (frozen_bottom.py), so both train on the same batches."""
    if shuffle:
        examples = examples.shuffle(_SHUFFLE_BUFFER, seed=spec.seed, reshuffle_each_iteration=True)
    return devices.replica_batches(examples, spec.batch_size, count, training=shuffle)


def split_files(fn_args: FnArgs, split: str) -> List[str]:
    """File patterns of a split: train and eval as TFX gives them, test next to them."""
    examples_uri = class_names_lib.examples_uri_of_split_files(fn_args.train_files[0])
    return {'train': fn_args.train_files, 'eval': fn_args.eval_files}.get(
        split, [os.path.join(examples_uri, f'Split-{split}', '*')])


def labels(fn_args: FnArgs, split: str) -> np.ndarray:
    """A split's labels, read without decoding any image."""
    files = [name for pattern in split_files(fn_args, split) for name in tf.io.gfile.glob(pattern)]
    spec = {LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}
    records = tf.data.TFRecordDataset(files, compression_type='GZIP')
    parsed = records.batch(1024).map(lambda batch: tf.io.parse_example(batch, spec)[LABEL_KEY])
    return np.concatenate([np.zeros(0, np.int64)] + [b.numpy().ravel() for b in parsed])


def sample_inputs(dataset: tf.data.Dataset) -> Dict[str, tf.Tensor]:
    """Up to _STATISTICS_IMAGES training images (every input), for feature statistics."""
    batches = []
    count = 0
    for inputs, _ in dataset:
        batches.append(inputs)
        count += int(next(iter(inputs.values())).shape[0])
        if count >= _STATISTICS_IMAGES:
            break
    return {key: tf.concat([b[key] for b in batches], axis=0)[:_STATISTICS_IMAGES] for key in batches[0]}


def feature_arrays(extractor: tf_keras.Model, data: TrainerData, split: str,
                   augmented: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """(features, labels) of a split in its stored order; augmented: through the extractor's
    augmentation layer (training mode for it alone: the backbones are built to stay in
    inference mode). The images are read through the split's cache (decoded once per run)."""
    return output_arrays(extractor, data, split, augmented)


def output_arrays(extractor: tf_keras.Model, data: TrainerData, split: str, augmented: bool = False):
    """(outputs, labels): feature_arrays for an extractor of any outputs (a list of them gives
    a list of arrays)."""
    extract = _feature_function(extractor, augmented)
    outputs, labels = [], []
    for inputs, label in data.dataset(split):
        outputs.append(tf.nest.map_structure(lambda tensor: tensor.numpy(), extract(inputs)))
        labels.append(label.numpy())
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *outputs), np.concatenate(labels)


def _feature_function(extractor: tf_keras.Model, augmented: bool):
    """The extractor as one graph for every split and batch size, traced once per extractor.

    As a graph: called eagerly, the backbone is much slower (bench/results/recipe-8c7693a.md).
    float32 whatever the precision policy: the head's input, like the classifier's, is float32.
    """
    functions = _FEATURE_FUNCTIONS.setdefault(extractor, {})
    if augmented not in functions:
        signature = [{name: tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)
                      for name, tensor in zip(extractor.input_names, extractor.inputs)}]
        # A weak reference: a function holding the extractor would keep it, its key, alive for good.
        model = weakref.ref(extractor)
        functions[augmented] = tf.function(
            lambda inputs: tf.nest.map_structure(lambda output: tf.cast(output, tf.float32),
                                                 model()(inputs, training=augmented)),
            input_signature=signature)
    return functions[augmented]


def features_dataset(features: np.ndarray, labels: np.ndarray, spec: TrainingSpec,
                     shuffle: bool) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=spec.seed, reshuffle_each_iteration=True)
    return devices.replica_batches(dataset, spec.batch_size, len(labels), training=shuffle).prefetch(tf.data.AUTOTUNE)
