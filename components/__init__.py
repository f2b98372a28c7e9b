"""The pipeline's own TFX pieces, one package per stage: example_gen, transform, trainer,
evaluator, report, and weights (the offline ImageNet weights). Nothing here imports `pipeline`.

TFT and TFMA 1.16 work with Keras 2 only: `tf.keras` must mean `tf_keras`, which TensorFlow
decides from TF_USE_LEGACY_KERAS when it first resolves `tf.keras`. Setting it here costs
nothing; the rest of the Keras set-up (keras_setup.py) needs TensorFlow and runs where Keras
is used, so that the typed specs can be imported without TensorFlow.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')


def __getattr__(name: str):
    """`components.ModelReport`, the name by which TFX's Kubeflow entrypoint imports the artifact
    type (its schema title), imported only when asked for: it needs TFX."""
    if name == 'ModelReport':
        from components.report.component import ModelReport
        return ModelReport
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
