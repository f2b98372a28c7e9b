"""ModelReport: one folder per run with everything about the model, the verdict included.

Runs after the Evaluator. It gathers the Trainer's reports (learning curves, confusion
matrix, training summary with data counts and metrics after each phase) and adds the
Evaluator's measurements on the test split (overall and per class) and the blessing, into
`summary.json` and `summary.md` of a new ModelReport artifact. The Trainer cannot write the
verdict itself: it is decided after it.
"""

import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types.artifact import Artifact

from components.evaluator import evaluation_results
from components.trainer import reports


class ModelReport(Artifact):
    """A folder of figures and summaries about one trained model."""

    # TFX's Kubeflow compiler wants a custom type named <namespace>.<Title>, and TFX's container
    # entrypoint imports the class by that name: `components` lends it (components/__init__.py).
    TYPE_NAME = 'components.ModelReport'


SUMMARY_JSON = 'summary.json'
SUMMARY_MARKDOWN = 'summary.md'
_COPIED = (reports.LEARNING_CURVES_FILE, reports.CONFUSION_MATRIX_FILE)


@tfx.dsl.components.component
def ModelReportGen(  # noqa: N802  (TFX names components like classes)
    model_run: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelRun],
    evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    report: tfx.dsl.components.OutputArtifact[ModelReport],
) -> None:
    summary = reports.read_json(os.path.join(model_run.uri, reports.TRAINING_SUMMARY_FILE))
    summary['evaluation'] = evaluation_results.read(evaluation.uri, summary.get('class_names'))
    summary['blessed'] = bool(blessing.get_int_custom_property('blessed'))
    tf.io.gfile.makedirs(report.uri)
    for name in _COPIED:
        source = os.path.join(model_run.uri, name)
        if tf.io.gfile.exists(source):
            tf.io.gfile.copy(source, os.path.join(report.uri, name), overwrite=True)
    reports.write_json(summary, os.path.join(report.uri, SUMMARY_JSON))
    reports.write_markdown(summary, os.path.join(report.uri, SUMMARY_MARKDOWN))
