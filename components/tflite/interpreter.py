"""Running a TFLite variant as an app would: pixels in, probabilities out, one image per call.

Integer inputs are quantised and integer outputs dequantised with the tensors' own scale and
zero point, so every variant answers in the same terms as the SavedModel.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import tensorflow as tf


class TFLiteModel:
    """One .tflite file (or its bytes) behind the TFLite interpreter."""

    def __init__(self, model_path: Optional[str] = None, model_content: Optional[bytes] = None,
                 num_threads: Optional[int] = 1):
        self._interpreter = tf.lite.Interpreter(model_path=model_path, model_content=model_content,
                                                num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.image_size = int(self._input['shape'][1])
        self.num_classes = int(self._output['shape'][-1])

    @property
    def input_dtype(self) -> str:
        return np.dtype(self._input['dtype']).name

    @property
    def input_quantization(self):
        """(scale, zero point) of the input; (0.0, 0) for a float input."""
        return tuple(self._input['quantization'])

    def _quantise(self, pixels: np.ndarray) -> np.ndarray:
        dtype = self._input['dtype']
        if np.issubdtype(dtype, np.floating):
            return pixels.astype(dtype)
        scale, zero_point = self._input['quantization']
        info = np.iinfo(dtype)
        return np.clip(np.round(pixels / scale + zero_point), info.min, info.max).astype(dtype)

    def _dequantise(self, values: np.ndarray) -> np.ndarray:
        if np.issubdtype(values.dtype, np.floating):
            return values.astype(np.float32)
        scale, zero_point = self._output['quantization']
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """float [N, S, S, 3] RGB in [0, 255] -> float32 [N, C], one invocation per image."""
        pixels = np.asarray(pixels, np.float32)
        if pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f'this model takes [N, {self.image_size}, {self.image_size}, 3] pixels, '
                             f'got {list(pixels.shape)}')
        rows = []
        for image in pixels:
            self._interpreter.set_tensor(self._input['index'], self._quantise(image[None]))
            self._interpreter.invoke()
            rows.append(self._dequantise(self._interpreter.get_tensor(self._output['index']))[0])
        return np.stack(rows) if rows else np.zeros((0, self.num_classes), np.float32)

    def latency_ms(self, pixels: np.ndarray, warmup: int = 3) -> float:
        """Median milliseconds of one invocation, over the images given, after `warmup` calls."""
        images = [self._quantise(np.asarray(image, np.float32)[None]) for image in pixels]
        for image in images[:warmup]:
            self._interpreter.set_tensor(self._input['index'], image)
            self._interpreter.invoke()
        times = []
        for image in images:
            self._interpreter.set_tensor(self._input['index'], image)
            started = time.perf_counter()
            self._interpreter.invoke()
            times.append(time.perf_counter() - started)
        return float(np.median(times) * 1000.0)
