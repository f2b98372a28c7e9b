"""ModelReport: one folder per run with everything about the model, the verdict included.

Runs after the Evaluator. It gathers the Trainer's reports (learning curves, confusion
matrix, training summary with data counts and metrics after each phase) and adds the
Evaluator's measurements on the test split (overall and per class) and the blessing, and
DataValidator's findings about the data (counts per split and class, anomalies, drift), into
`summary.json` and `summary.md` of a new ModelReport artifact. The Trainer cannot write the
verdict itself: it is decided after it. When the Tuner ran, its trials are added too, and
when TFLiteExport ran, its variants' measurements and which were pushed.

The same, with the figures and the thumbnails of the most confident mistakes inlined, becomes
`report.html` (html.py): the one page per run people look at.
"""

import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact

from components.data_validation.component import read_report as read_data_validation_report
from components.evaluator import evaluation_results
from components.example_gen.ingestion.report import REPORT_FILE as INGESTION_REPORT_FILE
from components.report import html
from components.tflite.component import read_report as read_tflite_report
from components.trainer import misclassified, reports
from components.tuner.spec import FINE_TUNE_STAGE, HEAD_STAGE, STAGE


class ModelReport(Artifact):
    """A folder of figures and summaries about one trained model."""

    # TFX's Kubeflow compiler wants a custom type named <namespace>.<Title>, and TFX's container
    # entrypoint imports the class by that name: `components` lends it (components/__init__.py).
    TYPE_NAME = 'components.ModelReport'


SUMMARY_JSON = 'summary.json'
SUMMARY_MARKDOWN = 'summary.md'
_COPIED = (reports.LEARNING_CURVES_FILE, reports.CONFUSION_MATRIX_FILE)
# What TFX's Tuner executor writes into its tuner_results artifact: every completed trial.
TUNER_RESULTS_FILE = 'tuner_results.json'


@component
def ModelReportGen(  # noqa: N802  (TFX names components like classes)
    model_run: InputArtifact[standard_artifacts.ModelRun],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    blessing: InputArtifact[standard_artifacts.ModelBlessing],
    report: OutputArtifact[ModelReport],
    # Optional (TFX's form for an optional input artifact: a default of None): the pipeline
    # connects it when the config has `tuning:`.
    tuner_results: InputArtifact[standard_artifacts.TunerResults] = None,
    # Connected when the config lists `tflite:` variants.
    tflite: InputArtifact[standard_artifacts.Model] = None,
    # ImageExampleGen's examples, for the files skipped at ingestion (ingestion_report.json).
    examples: InputArtifact[standard_artifacts.Examples] = None,
    # DataValidator's anomalies, for the data section (counts, anomalies, drift); absent with
    # `data_validation: off`.
    data_validation: InputArtifact[standard_artifacts.ExampleAnomalies] = None,
) -> None:
    summary = reports.read_json(os.path.join(model_run.uri, reports.TRAINING_SUMMARY_FILE))
    summary['evaluation'] = evaluation_results.read(evaluation.uri, summary.get('class_names'))
    summary['blessed'] = bool(blessing.get_int_custom_property('blessed'))
    summary['gate'] = gate_thresholds(evaluation.uri)
    summary['misclassified'] = misclassified.read(model_run.uri)
    if examples is not None and tf.io.gfile.exists(os.path.join(examples.uri, INGESTION_REPORT_FILE)):
        summary['ingestion'] = reports.read_json(os.path.join(examples.uri, INGESTION_REPORT_FILE))
    if data_validation is not None:
        summary['data_validation'] = read_data_validation_report(data_validation.uri)
    if tuner_results is not None:
        summary['tuning'] = tuning_trials(reports.read_json(os.path.join(tuner_results.uri, TUNER_RESULTS_FILE)))
    if tflite is not None:
        summary['tflite'] = read_tflite_report(tflite.uri)
    tf.io.gfile.makedirs(report.uri)
    for name in _COPIED:
        source = os.path.join(model_run.uri, name)
        if tf.io.gfile.exists(source):
            tf.io.gfile.copy(source, os.path.join(report.uri, name), overwrite=True)
    reports.write_json(summary, os.path.join(report.uri, SUMMARY_JSON))
    reports.write_markdown(summary, os.path.join(report.uri, SUMMARY_MARKDOWN))
    with tf.io.gfile.GFile(os.path.join(report.uri, html.REPORT_HTML), 'w') as f:
        f.write(html.render(summary, _images(summary, model_run.uri)))


def _images(summary: Dict[str, Any], model_run_dir: str) -> Dict[str, bytes]:
    """The PNGs the page inlines, by name: the figures and the mistakes' thumbnails."""
    names = list(_COPIED) + [item['thumbnail'] for item in (summary.get('misclassified') or {}).get('images', [])]
    images = {}
    for name in names:
        path = os.path.join(model_run_dir, name)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, 'rb') as f:
                images[name] = f.read()
    return images


def gate_thresholds(evaluation_uri: str) -> Optional[Dict[str, float]]:
    """min_accuracy and max_accuracy_drop as the Evaluator applied them (components/evaluator/gate.py),
    read back from the eval config TFMA wrote beside its results; None if there is none."""
    from tensorflow_model_analysis.writers.eval_config_writer import load_eval_run
    config = load_eval_run(evaluation_uri)[0]
    for spec in config.metrics_specs if config else []:
        for metric in spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                threshold = per_slice.threshold
                if threshold.value_threshold.HasField('lower_bound'):
                    # (+ 0.0: gate.py's epsilon leaves -0.0 for a drop of 0)
                    return {'min_accuracy': round(threshold.value_threshold.lower_bound.value, 6) + 0.0,
                            'max_accuracy_drop': round(-threshold.change_threshold.absolute.value, 6) + 0.0}
    return None


def tuning_trials(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """TFX's tuner_results rows (trial_id, score, the values, our `stage`), grouped by stage, each
    sorted by score (validation loss, lower is better), with the trial whose values the Trainer
    got marked: the best of the last stage (with fine-tuning trials, the best of those, since
    the two stages score different models; see components/tuner/oracle.py)."""
    stages = list(dict.fromkeys([HEAD_STAGE, FINE_TUNE_STAGE] + [row.get(STAGE, HEAD_STAGE) for row in rows]))
    trials = [{'trial_id': row['trial_id'], 'stage': row.get(STAGE, HEAD_STAGE), 'score': row['score'],
               'values': {k: v for k, v in row.items() if k not in ('trial_id', 'score', STAGE)}} for row in rows]
    trials.sort(key=lambda t: (stages.index(t['stage']), t['score']))
    final = next((stage for stage in reversed(stages) if any(t['stage'] == stage for t in trials)), None)
    chosen = min((t for t in trials if t['stage'] == final), key=lambda t: t['score'], default=None)
    for trial in trials:
        trial['chosen'] = trial is chosen
    return {'objective': 'val_loss (min)', 'chosen_trial': chosen['trial_id'] if chosen else None,
            'chosen_values': chosen['values'] if chosen else {}, 'trials': trials}
