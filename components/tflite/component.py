"""TFLiteExport: the SavedModel plus its TFLite variants within budget, as one Model for the Pusher.

Runs after the Trainer, beside the Evaluator. A component of its own rather than part of the
Trainer: conversion and the interpreter's CPU timings need no GPU (on Kubeflow it is a CPU
step while the Trainer holds the GPU node), and changing `tflite:` or the budget re-runs
only this step, never training. Its `model` output is a copy of the Trainer's SavedModel
(byte for byte: the one the Evaluator judged) with the accepted variants in `tflite/`
inside it; the Pusher pushes it when the Evaluator blessed the Trainer's model, so a model
that fails the gate ships no TFLite file either. Its report is `tflite_report.json` at the
artifact's root, and refused variants are kept in `rejected/` there.
"""
import json
import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from components.tflite.spec import TFLiteSpec

REPORT_FILE = 'tflite_report.json'
REJECTED_DIR = 'rejected'


@component
def TFLiteExport(  # noqa: N802  (TFX names components like classes)
    model: InputArtifact[standard_artifacts.Model],
    examples: InputArtifact[standard_artifacts.Examples],
    exported: OutputArtifact[standard_artifacts.Model],
    spec: Parameter[str],  # TFLiteSpec as JSON
    # A fingerprint of components/: TFX's cache key holds this function's name, not its code.
    code_version: Parameter[str] = '',
) -> None:
    # Imported here: it loads Keras, which the pipeline's compilation (tfx_pipeline imports
    # this module) must not (it would write ~/.keras before KERAS_HOME is set).
    from components.tflite import export
    tflite_spec = TFLiteSpec.model_validate_json(spec)
    saved_model_dir = path_utils.serving_model_dir(exported.uri)
    io_utils.copy_dir(path_utils.serving_model_path(model.uri), saved_model_dir)
    report = export.export_variants(saved_model_dir, examples.uri, tflite_spec,
                                    os.path.join(exported.uri, REJECTED_DIR))
    with tf.io.gfile.GFile(os.path.join(exported.uri, REPORT_FILE), 'w') as f:
        json.dump(report, f, indent=1)


def read_report(exported_uri: str):
    """The report TFLiteExport wrote into its output, or None (an older artifact)."""
    path = os.path.join(exported_uri, REPORT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
