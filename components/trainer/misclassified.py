"""The test images the final model got wrong, most confident mistakes first, as thumbnails.

A confusion matrix counts mistakes; looking at them shows why (a mislabelled image, two classes
that look alike, a background that gives the class away). The Trainer already has the final
model's test probabilities; this writes into the model_run folder

    misclassified.json      test image count, mistake count, and for at most MAX_IMAGES of them:
                            file, true class, predicted class and its probability, thumbnail
    misclassified/NNN.png   the thumbnails (at most THUMBNAIL_PX on the longer side)

for ModelReport to put into report.html. Only the capped set is decoded: the rest of the test
split is read as records, not images.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from components.features import FILENAME_KEY, IMAGE_KEY, LABEL_KEY
from components.trainer import reports
from components.transform.image_decoding import decode_rgb

logger = logging.getLogger(__name__)

MISCLASSIFIED_FILE = 'misclassified.json'
THUMBNAILS_DIR = 'misclassified'
MAX_IMAGES = 24
THUMBNAIL_PX = 96
# The Trainer's spec does not carry the configured background; transparent pixels are shown on white.
BACKGROUND = (255.0, 255.0, 255.0)


def most_confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, limit: int = MAX_IMAGES) -> List[int]:
    """Indices of the wrong predictions, the most confident (highest predicted probability) first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-probabilities[wrong, predicted[wrong]], kind='stable')
    return [int(i) for i in wrong[order][:limit]]


def thumbnail_png(encoded: bytes, size: int = THUMBNAIL_PX) -> bytes:
    """An encoded image as a PNG of at most size x size, aspect ratio kept; decoded as Transform
    decodes (components/transform/image_decoding.py), transparency on BACKGROUND."""
    rgb = decode_rgb(tf.constant(encoded), BACKGROUND)
    small = tf.image.resize(rgb, [size, size], preserve_aspect_ratio=True, antialias=True)
    return tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(small, 0.0, 255.0)), tf.uint8)).numpy()


def raw_examples(fn_args, split_files: List[str], raw_schema, batch_size: int) -> Iterator[Tuple[str, bytes, int]]:
    """(file, encoded image, label) of a split in the order the Trainer predicted it: the same
    TFXIO factory, files and options as data.TrainerData without shuffling (its reader
    interleaves files, so a plain read of the files would come in another order)."""
    from tfx_bsl.public import tfxio
    dataset = fn_args.data_accessor.tf_dataset_factory(
        split_files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=1, shuffle=False,
                                                    drop_final_batch=False), raw_schema)
    for batch in dataset:
        files = batch[FILENAME_KEY].numpy().reshape(-1)
        images = batch[IMAGE_KEY].numpy().reshape(-1)
        labels = batch[LABEL_KEY].numpy().reshape(-1)
        for file, image, label in zip(files, images, labels, strict=True):
            yield file.decode('utf-8', 'replace'), bytes(image), int(label)


def write(directory: str, labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
          examples: Iterable[Tuple[str, bytes, int]], limit: int = MAX_IMAGES) -> Optional[Dict[str, Any]]:
    """Writes misclassified.json and the thumbnails; returns what it wrote, or None when the
    examples do not line up with the predictions (then nothing is written: a wrong file name
    under an image would be worse than no image)."""
    chosen = most_confident_mistakes(labels, probabilities, limit)
    rank = {index: n for n, index in enumerate(chosen)}
    predicted = probabilities.argmax(axis=1)
    images: List[Optional[Dict[str, Any]]] = [None] * len(chosen)
    count = 0
    for index, (file, encoded, label) in enumerate(examples):
        count += 1
        if index >= len(labels) or label != labels[index]:
            logger.warning('Misclassified images not written: the test examples are not in the order '
                           'they were predicted in (example %d).', index)
            return None
        if index in rank:
            n = rank[index]
            thumbnail = f'{THUMBNAILS_DIR}/{n:03d}.png'
            tf.io.gfile.makedirs(os.path.join(directory, THUMBNAILS_DIR))
            with tf.io.gfile.GFile(os.path.join(directory, thumbnail), 'wb') as f:
                f.write(thumbnail_png(encoded))
            images[n] = {'file': file, 'true_class': class_names[label],
                         'predicted_class': class_names[predicted[index]],
                         'probability': float(probabilities[index, predicted[index]]),
                         'true_class_probability': float(probabilities[index, label]), 'thumbnail': thumbnail}
    if count != len(labels):
        logger.warning('Misclassified images not written: %d test examples read, %d predicted.', count, len(labels))
        return None
    result = {'test_images': int(len(labels)), 'misclassified': int(np.sum(predicted != labels)),
              'thumbnail_px': THUMBNAIL_PX, 'background': list(BACKGROUND), 'images': images}
    reports.write_json(result, os.path.join(directory, MISCLASSIFIED_FILE))
    return result


def read(model_run_dir: str) -> Optional[Dict[str, Any]]:
    """misclassified.json of a model_run folder, or None (no test split, or an older run)."""
    path = os.path.join(model_run_dir, MISCLASSIFIED_FILE)
    return reports.read_json(path) if tf.io.gfile.exists(path) else None
