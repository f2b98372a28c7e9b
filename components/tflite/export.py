"""Converts the exported model into its TFLite variants, measures each on the test split
against the SavedModel, and keeps beside the SavedModel only those within the accuracy budget.

Layout written (the Pusher copies the SavedModel folder, so the accepted files travel with it):

    <saved model>/tflite/<variant>.tflite   variants within max_accuracy_drop
    <saved model>/tflite/labels.txt         class names, one per line, in output order
    <saved model>/tflite/model_info.json    input size, dtype and quantisation per variant,
                                            the decoding an app must match (background, resize)
    <rejected dir>/<variant>.tflite         variants measured and refused (kept to inspect)
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from components.features import IMAGE_KEY, LABEL_KEY
from components.tflite import variants as variants_lib
from components.tflite.interpreter import TFLiteModel
from components.tflite.spec import TFLiteSpec
from components.trainer.serving import PIXELS_INPUT, PIXELS_SIGNATURE, PROBABILITIES_KEY
from components.transform.image_decoding import decode_image

logger = logging.getLogger(__name__)

TFLITE_DIR = 'tflite'
LABELS_FILE = 'labels.txt'
MODEL_INFO_FILE = 'model_info.json'
_BATCH = 32


def split_pixels(examples_uri: str, split: str, size: int, spec: TFLiteSpec,
                 limit: Optional[int] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Batches of (float32 pixels [n, size, size, 3] in [0, 255], labels) of one split of
    ImageExampleGen's examples, decoded as Transform decodes them."""
    files = tf.io.gfile.glob(os.path.join(examples_uri, f'Split-{split}', '*'))
    feature_spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    background = tuple(float(c) for c in spec.background)
    dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
    if limit is not None:
        dataset = dataset.take(limit)
    dataset = dataset.map(lambda record: tf.io.parse_single_example(record, feature_spec)).map(
        lambda example: (decode_image(example[IMAGE_KEY], size, background, spec.resize), example[LABEL_KEY]))
    for pixels, labels in dataset.batch(_BATCH).prefetch(1):
        yield pixels.numpy(), labels.numpy()


def calibration_images(examples_uri: str, size: int, spec: TFLiteSpec, limit: int):
    """int8's representative dataset: a black and a white image (so the input's range is exactly
    0..255: scale 1, zero point 0), then up to `limit` training images, one per call."""
    def representative():
        yield [np.zeros((1, size, size, 3), np.float32)]
        yield [np.full((1, size, size, 3), 255.0, np.float32)]
        for pixels, _ in split_pixels(examples_uri, 'train', size, spec, limit=limit):
            for image in pixels:
                yield [image[None]]
    return representative


def export_variants(saved_model_dir: str, examples_uri: str, spec: TFLiteSpec, rejected_dir: str) -> Dict[str, Any]:
    """Converts, measures and gates every variant of spec; returns the report (also logged)."""
    loaded = tf.saved_model.load(saved_model_dir)
    from_pixels = loaded.signatures[PIXELS_SIGNATURE]
    size = int(from_pixels.structured_input_signature[1][PIXELS_INPUT].shape[1])
    class_names = [name.decode() for name in loaded.class_names.numpy()]

    representative = calibration_images(examples_uri, size, spec, spec.calibration_images)
    results: Dict[str, Dict[str, Any]] = {}
    models: Dict[str, bytes] = {}
    for variant in spec.variants:
        started = time.time()
        try:
            models[variant] = variants_lib.convert(saved_model_dir, PIXELS_SIGNATURE, variant, representative)
        except Exception as error:  # noqa: BLE001  (the converter raises many kinds; the run goes on)
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            logger.warning('TFLite %s: conversion failed: %s', variant, message)
            results[variant] = {'pushed': False, 'reason': f'conversion failed: {message}'}
            continue
        types = variants_lib.tensor_types(models[variant])
        results[variant] = {'size_bytes': len(models[variant]), 'types': types,
                            'convert_seconds': round(time.time() - started, 2)}
        problem = variants_lib.check_types(variant, types)
        if problem:
            results[variant].update(pushed=False, reason=problem)
            del models[variant]

    measured = _measure(from_pixels, {v: TFLiteModel(model_content=m) for v, m in models.items()},
                        examples_uri, size, spec, len(class_names))
    reference = measured.pop('savedmodel')
    reference['size_bytes'] = _folder_bytes(saved_model_dir)
    for variant, metrics in measured.items():
        result = results[variant]
        result.update(metrics)
        if reference['accuracy'] is None:
            result.update(pushed=False, reason='no test images to check it on')
            continue
        result['accuracy_drop'] = reference['accuracy'] - metrics['accuracy']
        result['pushed'] = result['accuracy_drop'] <= spec.max_accuracy_drop
        if not result['pushed']:
            result['reason'] = (f'loses {result["accuracy_drop"]:.4f} test accuracy against the SavedModel, '
                                f'more than max_tflite_accuracy_drop {spec.max_accuracy_drop}')

    accepted = [v for v in spec.variants if results[v].get('pushed')]
    tflite_dir = os.path.join(saved_model_dir, TFLITE_DIR)
    for variant in models:
        folder = tflite_dir if variant in accepted else rejected_dir
        tf.io.gfile.makedirs(folder)
        path = os.path.join(folder, f'{variant}.tflite')
        with tf.io.gfile.GFile(path, 'wb') as f:
            f.write(models[variant])
        results[variant]['file'] = (f'{TFLITE_DIR}/' if variant in accepted else 'rejected/') + f'{variant}.tflite'
    if accepted:
        with tf.io.gfile.GFile(os.path.join(tflite_dir, LABELS_FILE), 'w') as f:
            f.write(''.join(f'{name}\n' for name in class_names))
        _write_json(model_info(size, spec, class_names, {v: results[v] for v in accepted},
                               {v: models[v] for v in accepted}), os.path.join(tflite_dir, MODEL_INFO_FILE))

    report = {'image_size': size, 'max_accuracy_drop': spec.max_accuracy_drop, 'test_images': reference['images'],
              'savedmodel': reference, 'variants': results, 'pushed': accepted,
              'latency': f'median of {spec.latency_images} single-image calls, 1 CPU thread'}
    for variant, result in results.items():
        if 'accuracy' in result:
            logger.info('TFLite %s: %d bytes, test accuracy %.4f (SavedModel %.4f), %.1f ms per image: %s',
                        variant, result['size_bytes'], result['accuracy'], reference['accuracy'] or 0.0,
                        result['latency_ms'], 'pushed' if result['pushed'] else 'NOT pushed: ' + result['reason'])
        elif not result.get('pushed'):
            logger.warning('TFLite %s: NOT pushed: %s', variant, result['reason'])
    return report


def _measure(from_pixels, interpreters: Dict[str, TFLiteModel], examples_uri: str, size: int, spec: TFLiteSpec,
             num_classes: int) -> Dict[str, Dict[str, Any]]:
    """Accuracy, per-class recall and latency of the SavedModel ('savedmodel') and each
    interpreter on the same decoded test images, streamed in batches."""
    labels: List[np.ndarray] = []
    predicted: Dict[str, List[np.ndarray]] = {name: [] for name in ['savedmodel', *interpreters]}
    latency_pixels: List[np.ndarray] = []
    for pixels, batch_labels in split_pixels(examples_uri, 'test', size, spec):
        labels.append(batch_labels)
        if sum(len(p) for p in latency_pixels) < spec.latency_images:
            latency_pixels.append(pixels)
        predicted['savedmodel'].append(from_pixels(**{PIXELS_INPUT: tf.constant(pixels)})[PROBABILITIES_KEY]
                                       .numpy().argmax(axis=1))
        for name, interpreter in interpreters.items():
            predicted[name].append(interpreter.probabilities(pixels).argmax(axis=1))
    truth = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    sample = np.concatenate(latency_pixels)[:spec.latency_images] if latency_pixels else None
    measured = {}
    for name, rows in predicted.items():
        guesses = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        recall = {int(c): float(np.mean(guesses[truth == c] == c)) for c in range(num_classes) if np.any(truth == c)}
        measured[name] = {'accuracy': float(np.mean(guesses == truth)) if len(truth) else None,
                          'per_class_recall': recall, 'images': int(len(truth))}
        if sample is not None:
            measured[name]['latency_ms'] = (_savedmodel_latency_ms(from_pixels, sample) if name == 'savedmodel'
                                            else interpreters[name].latency_ms(sample))
    return measured


def _savedmodel_latency_ms(from_pixels, sample: np.ndarray, warmup: int = 3) -> float:
    """The same measure for the SavedModel through TensorFlow (all threads TensorFlow uses)."""
    images = [tf.constant(image[None]) for image in sample]
    for image in images[:warmup]:
        from_pixels(**{PIXELS_INPUT: image})
    times = []
    for image in images:
        started = time.perf_counter()
        from_pixels(**{PIXELS_INPUT: image})[PROBABILITIES_KEY].numpy()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000.0)


def model_info(size: int, spec: TFLiteSpec, class_names: List[str], results: Dict[str, Dict[str, Any]],
               models: Dict[str, bytes]) -> Dict[str, Any]:
    """What an app needs to call the files: written as tflite/model_info.json."""
    variants = {}
    for variant, model in models.items():
        interpreter = tf.lite.Interpreter(model_content=model)
        tensors = {}
        for role, details in (('input', interpreter.get_input_details()[0]),
                              ('output', interpreter.get_output_details()[0])):
            scale, zero_point = details['quantization']
            tensors[role] = {'dtype': np.dtype(details['dtype']).name, 'shape': [int(d) for d in details['shape']],
                             'scale': float(scale), 'zero_point': int(zero_point)}
        variants[variant] = {'file': f'{variant}.tflite', 'test_accuracy': results[variant]['accuracy'],
                             'size_bytes': len(model), **tensors}
    return {
        'image_size': size,
        'input': f'RGB pixels in [0, 255], [1, {size}, {size}, 3]; decode, composite transparency onto '
                 f'background and make square as `resize` says, then pass them as they are (scaling is '
                 f'inside the model). uint8 inputs (int8): the pixel values themselves.',
        'output': 'probabilities [1, classes] in labels.txt order; uint8 outputs: (q - zero_point) * scale',
        'background': list(spec.background),
        'resize': spec.resize,
        'labels_file': LABELS_FILE,
        'class_names': class_names,
        'variants': variants,
    }


def read_model_info(tflite_file: str) -> Dict[str, Any]:
    """The model_info.json beside a .tflite file this module wrote."""
    path = os.path.join(os.path.dirname(tflite_file), MODEL_INFO_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f'{path} is missing: it says how {os.path.basename(tflite_file)} decodes images '
                                f'and names its classes (TFLiteExport writes it beside the .tflite files)')
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _folder_bytes(folder: str) -> int:
    total = 0
    for directory, _, files in tf.io.gfile.walk(folder):
        if os.path.basename(directory.rstrip('/')) == TFLITE_DIR:
            continue
        total += sum(tf.io.gfile.stat(os.path.join(directory, name)).length for name in files)
    return total


def _write_json(data: Dict[str, Any], path: str) -> None:
    with tf.io.gfile.GFile(path, 'w') as f:
        json.dump(data, f, indent=1)
