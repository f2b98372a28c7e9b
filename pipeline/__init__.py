"""Configuration, assembly and command-line entry points of the image transfer-learning pipeline.

TFT and TFMA 1.16 work with Keras 2 only: make `tf.keras` mean `tf_keras` before anything
imports TensorFlow.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
