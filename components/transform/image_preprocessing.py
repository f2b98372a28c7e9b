"""Transform's `preprocessing_fn`: raw image bytes to one input tensor per backbone.

This file is TFX's Transform module file. TFX packages every .py file of this folder into
the component's cache key, so the folder holds nothing else but the `__init__.py` that makes it
importable in the Kubeflow image; the code it calls lives in the installed `components` package,
whose fingerprint the pipeline adds to `custom_config`.
"""
from typing import Any, Dict

import tensorflow as tf

from components.trainer import backbones
from components.features import IMAGE_KEY, LABEL_KEY
from components.transform.image_decoding import decode_images
from components.transform.spec import PreprocessingSpec


def preprocessing_fn(inputs: Dict[str, tf.Tensor], custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Decodes, forces 3 channels, resizes and scales as each backbone expects.

    Each image is decoded once per distinct size. The label passes through; it is dropped
    automatically at serving time, where only `image_raw` is fed.
    """
    spec = PreprocessingSpec(**{key: custom_config[key] for key in PreprocessingSpec.model_fields})
    decoded = {}
    outputs = {LABEL_KEY: tf.reshape(inputs[LABEL_KEY], [-1])}
    for item in spec.inputs:
        if item.image_size not in decoded:
            decoded[item.image_size] = decode_images(inputs[IMAGE_KEY], item.image_size)
        outputs[item.key] = backbones.get(item.backbone).preprocess(decoded[item.image_size])
    return outputs
