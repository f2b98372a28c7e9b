"""Makes `tf_keras` (Keras 2) the Keras of this process, and keeps it fast.

TFT and TFMA 1.16 work with Keras 2 only, so `tf.keras` must mean `tf_keras`; that is decided
by TF_USE_LEGACY_KERAS the first time TensorFlow resolves `tf.keras`.

TensorFlow 2.16's AutoGraph skips the `keras` package when it converts a `tf.function` but
does not know the package's new name, `tf_keras`, and converts all of Keras' internals
instead: the first epoch of a MobileNetV2 took 30 s instead of 2 s here. Later TensorFlow
releases add the same rule.
"""
import logging
import os

logger = logging.getLogger(__name__)


def use_tf_keras() -> None:
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    try:
        from tensorflow.python.autograph.core import config as autograph_config
    except ImportError:  # pragma: no cover - a TensorFlow without this private module
        logger.warning('cannot tell AutoGraph to skip tf_keras; the first epoch will be slow')
        return
    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(rule, autograph_config.DoNotConvert) and rule.matches('tf_keras') for rule in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert('tf_keras'),) + tuple(rules)
