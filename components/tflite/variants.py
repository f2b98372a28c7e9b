"""The TFLite variants and how each is converted.

Every variant is converted from the SavedModel's `from_pixels` signature
(components/trainer/serving.py): RGB pixels in [0, 255] at the model's size go in, the
backbone's scaling happens inside, class probabilities come out. So an app passes camera
pixels, resized, and nothing else.

    float32  no quantisation: the reference, the largest file.
    float16  weights stored as float16 (half the size); computed in float32 on CPUs, in
             float16 by GPU delegates.
    dynamic  dynamic-range quantisation: weights int8, activations float32, quantised on the
             fly by the kernels (a quarter of the size).
    int8     full-integer: weights and activations int8, input and output uint8, calibrated on
             training images (what Edge TPUs, NNAPI and microcontrollers need). The input is
             the pixels as uint8, unchanged: calibration includes a black and a white image,
             so the input's range is exactly 0..255 (scale 1, zero point 0). The output is
             probability * 256 as uint8 (scale 1/256): dequantize with the output tensor's
             scale and zero point.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
import tensorflow as tf

from components.tflite.spec import VARIANTS  # noqa: F401  (the names, kept where TensorFlow is not needed)


def convert(saved_model_dir: str, signature: str, variant: str,
            representative: Optional[Callable[[], Iterable[List[np.ndarray]]]] = None,
            new_quantizer: bool = True) -> bytes:
    """The .tflite flatbuffer of one variant. int8 needs `representative`: a function returning
    an iterable of [float32 pixels of shape [1, S, S, 3]]. new_quantizer False: TFLite's older
    quantiser (bench/tflite_variants.py compares them)."""
    if variant not in VARIANTS:
        raise ValueError(f'unknown TFLite variant {variant!r}; known: {", ".join(VARIANTS)}')
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature])
    converter.experimental_new_quantizer = new_quantizer
    if variant == 'float16':
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == 'dynamic':
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == 'int8':
        if representative is None:
            raise ValueError('the int8 variant needs representative images to calibrate on')
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # Only integer kernels: conversion fails instead of silently keeping float operations.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def tensor_types(model: bytes) -> Dict[str, object]:
    """What the file really holds: input and output types, and how many tensors of each type
    (weights included), read back with the TFLite interpreter."""
    interpreter = tf.lite.Interpreter(model_content=model)
    counts: Dict[str, int] = {}
    for tensor in interpreter.get_tensor_details():
        name = np.dtype(tensor['dtype']).name
        counts[name] = counts.get(name, 0) + 1
    return {
        'input': np.dtype(interpreter.get_input_details()[0]['dtype']).name,
        'output': np.dtype(interpreter.get_output_details()[0]['dtype']).name,
        'tensors': dict(sorted(counts.items())),
    }


def check_types(variant: str, types: Dict[str, object]) -> Optional[str]:
    """Why the converted file is not what its variant promises, or None.

    int8 must contain no float tensor at all (tensorflow/tensorflow#57619: an "int8" export
    that was silently float); dynamic must hold int8 weights; float16 float16 weights.
    """
    tensors = types['tensors']
    if variant == 'int8':
        floats = {name: count for name, count in tensors.items() if name.startswith('float')}
        if floats or types['input'] != 'uint8' or types['output'] != 'uint8':
            return f'not full-integer: input {types["input"]}, output {types["output"]}, float tensors {floats}'
    elif variant == 'dynamic' and not tensors.get('int8'):
        return 'no int8 weights: dynamic-range quantisation did not apply'
    elif variant == 'float16' and not tensors.get('float16'):
        return 'no float16 weights: float16 quantisation did not apply'
    return None
