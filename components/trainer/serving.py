"""The exported SavedModel: raw image bytes in, class probabilities and names out.

Two signatures share one path (transform graph -> model -> probabilities):

    serving_default  image_bytes: tf.string [N] (JPEG, PNG, GIF, BMP)
                     -> probabilities [N, C], class_id [N], class_name [N]
    from_examples    examples: serialized tf.Examples as ImageExampleGen writes them
                     -> probabilities [N, C]        (what the Evaluator calls)

The transform graph is Transform's own output, so serving decodes and scales exactly as
training did. Bytes that cannot be decoded make the call fail with InvalidArgumentError.

A third one starts after decoding, for what cannot decode (phones, TFLite):

    from_pixels      pixels: float32 [N, S, S, 3], RGB in [0, 255], already square and S px
                     -> probabilities [N, C]

where S is the largest backbone's image_size; each backbone's own scaling (and, in an
ensemble of sizes, a bilinear resize to its size) is inside. components/tflite converts it.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Sequence

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from components.features import IMAGE_KEY
from components.trainer import backbones
from components.trainer.model import probabilities
from components.trainer.spec import BackboneSpec

SERVING_SIGNATURE = 'serving_default'
EXAMPLES_SIGNATURE = 'from_examples'
PIXELS_SIGNATURE = 'from_pixels'
PIXELS_INPUT = 'pixels'
PROBABILITIES_KEY = 'probabilities'


class _ServingModule(tf.Module):
    """Holds the model, the transform layer and the class names so all are saved together."""

    def __init__(self, model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput,
                 class_names: Sequence[str], backbone_specs: Sequence[BackboneSpec]):
        super().__init__()
        self.model = model
        self.tft_layer = tf_transform_output.transform_features_layer()
        # A variable (not a constant) so the names are saved and readable after loading.
        self.class_names = tf.Variable(list(class_names), trainable=False, name='class_names')
        self._num_classes = len(class_names)
        self._input_keys = list(model.input_names)
        # serve_examples parses only what the transform graph reads from a served example, the
        # image: the other features of ImageExampleGen's examples (label, file name, image
        # facts) describe the data set and would otherwise be required of every client.
        self._raw_spec = {IMAGE_KEY: tf_transform_output.raw_feature_spec()[IMAGE_KEY]}
        self._backbones = [(b.key, backbones.get(b.name).preprocess, b.image_size) for b in backbone_specs]
        self.pixels_size = max(size for _, _, size in self._backbones)
        # The model as one graph that every signature calls: traced and saved once, not once
        # per signature (which made the export and the Evaluator's loading of it slower).
        self._logits = tf.function(
            lambda inputs: self.model(inputs, training=False),
            input_signature=[{b.key: tf.TensorSpec([None, b.image_size, b.image_size, 3], tf.float32, name=b.key)
                              for b in backbone_specs if b.key in self._input_keys}])

    def _probabilities(self, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
        transformed = self.tft_layer(raw_features)
        logits = self._logits({key: transformed[key] for key in self._input_keys})
        return probabilities(logits, self._num_classes)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
    def serve_image_bytes(self, image_bytes):
        probs = self._probabilities({IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])})
        class_id = tf.argmax(probs, axis=-1)
        return {
            PROBABILITIES_KEY: probs,
            'class_id': class_id,
            'class_name': tf.gather(self.class_names, class_id),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
    def serve_examples(self, serialized_examples):
        parsed = tf.io.parse_example(serialized_examples, self._raw_spec)
        return {PROBABILITIES_KEY: self._probabilities(parsed)}

    def serve_pixels(self, pixels):
        inputs = {}
        for key, preprocess, size in self._backbones:
            resized = pixels if size == self.pixels_size else tf.image.resize(pixels, [size, size])
            inputs[key] = preprocess(resized)
        logits = self._logits({key: inputs[key] for key in self._input_keys})
        return {PROBABILITIES_KEY: probabilities(logits, self._num_classes)}


def export(model: tf_keras.Model, tf_transform_output: tft.TFTransformOutput,
           class_names: Sequence[str], export_dir: str, backbone_specs: Sequence[BackboneSpec]) -> None:
    module = _ServingModule(model, tf_transform_output, class_names, backbone_specs)
    size = module.pixels_size
    pixels = tf.function(module.serve_pixels, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name=PIXELS_INPUT)])
    signatures = {
        SERVING_SIGNATURE: module.serve_image_bytes.get_concrete_function(),
        EXAMPLES_SIGNATURE: module.serve_examples.get_concrete_function(),
        PIXELS_SIGNATURE: pixels.get_concrete_function(),
    }
    with _without_keras_layer_traces():
        tf.saved_model.save(module, export_dir, signatures=signatures)


def _without_keras_layer_traces():
    """Saving skips tracing every Keras layer's call function, which the signatures never use.

    Those traces would only let `tf_keras.models.load_model` rebuild the layers; this model is
    served and evaluated through its signatures, and tracing them was most of the export's
    time. A private tf_keras switch (the public one,
    `model.save(save_traces=False)`, saves a Keras model, not this module): without it, save
    as before.
    """
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # pragma: no cover - another tf_keras layout
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False, in_tf_saved_model_scope=True)
