"""Transform's `preprocessing_fn`: raw image bytes to one input tensor per backbone.

Transform imports it by path (pipeline.tfx_pipeline.TRANSFORM_FUNCTION), locally and in the
Kubeflow image; the cache key holds that path, and the pipeline adds a fingerprint of
components/ to `custom_config` so that a change of the code re-runs Transform.
"""
from typing import Any, Dict

import tensorflow as tf

from components.trainer import backbones
from components.features import IMAGE_KEY, LABEL_KEY
from components.transform.image_decoding import decode_images
from components.transform.spec import PreprocessingSpec


def preprocessing_fn(inputs: Dict[str, tf.Tensor], custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
    """Decodes (transparency composited onto `background`), makes square (`resize`), scales per backbone.

    Each image is decoded once per distinct size. The label passes through; it is dropped
    automatically at serving time, where only `image_raw` is fed. Keys missing from
    custom_config take PreprocessingSpec's defaults.
    """
    spec = PreprocessingSpec(**{key: custom_config[key] for key in PreprocessingSpec.model_fields
                                if key in custom_config})
    decoded = {}
    outputs = {LABEL_KEY: tf.reshape(inputs[LABEL_KEY], [-1])}
    for item in spec.inputs:
        if item.image_size not in decoded:
            decoded[item.image_size] = decode_images(inputs[IMAGE_KEY], item.image_size, spec.background,
                                                   spec.resize)
        outputs[item.key] = backbones.get(item.backbone).preprocess(decoded[item.image_size])
    return outputs
