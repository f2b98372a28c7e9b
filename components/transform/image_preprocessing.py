"""Transform's `preprocessing_fn`: raw image bytes to the backbone's input tensor.

This file is TFX's Transform module file. TFX packages every .py file of this folder into
the component's cache key, so the folder holds nothing else but the `__init__.py` that makes it
importable in the Kubeflow image; the code it calls lives in the installed `components` package,
whose fingerprint the pipeline adds to `custom_config`.
"""
from typing import Any, Dict

import tensorflow as tf

from components import backbones
from components.features import IMAGE_KEY, LABEL_KEY, TRANSFORMED_IMAGE_KEY
from components.image_decoding import decode_images
from pipeline.config import PreprocessingConfig


def preprocessing_fn(inputs: Dict[str, tf.Tensor], custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Decodes, forces 3 channels, resizes and scales as the backbone expects.

    The label passes through; it is dropped automatically at serving time, where only
    `image_raw` is fed.
    """
    config = PreprocessingConfig(**{key: custom_config[key] for key in PreprocessingConfig.model_fields})
    images = decode_images(inputs[IMAGE_KEY], config.image_size)
    return {
        TRANSFORMED_IMAGE_KEY: backbones.get(config.backbone).preprocess(images),
        LABEL_KEY: tf.reshape(inputs[LABEL_KEY], [-1]),
    }
