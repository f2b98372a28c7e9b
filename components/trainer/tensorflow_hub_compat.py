"""Imports tensorflow_hub 0.15, the version TFX 1.16 pins, on TensorFlow 2.16.

tensorflow_hub 0.15's package import runs `from tensorflow.compat.v1 import estimator`, which
TensorFlow 2.16 no longer has (tensorflow-estimator 2.15 does not import on it either), so
`import tensorflow_hub` fails outright. The failing submodule, tensorflow_hub.estimator, only
exports TF1 Hub-format modules for Estimators, which this pipeline never uses. A stand-in
that raises if called is registered under its name first; KerasLayer and handle resolution
are untouched.
"""
import sys
import types


def _unavailable(*args, **kwargs):
    raise NotImplementedError('tensorflow_hub.estimator (TF1 Hub-format exports for Estimators) '
                              'does not work with TensorFlow 2.16')


def import_tensorflow_hub():
    if 'tensorflow_hub' not in sys.modules and 'tensorflow_hub.estimator' not in sys.modules:
        try:
            from tensorflow.compat.v1 import estimator  # noqa: F401
        except ImportError:
            stand_in = types.ModuleType('tensorflow_hub.estimator')
            stand_in.LatestModuleExporter = _unavailable
            stand_in.register_module_for_export = _unavailable
            sys.modules['tensorflow_hub.estimator'] = stand_in
    import tensorflow_hub
    return tensorflow_hub
