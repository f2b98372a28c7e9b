"""The pipeline's own TFX pieces: image ingestion, preprocessing, model and serving code.

Importing this package sets up Keras 2 (`tf_keras`) for the process; see keras_setup.
"""
from components import keras_setup

keras_setup.use_tf_keras()
