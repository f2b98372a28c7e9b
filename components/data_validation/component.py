"""DataValidator, between StatisticsGen and Transform, and RecordDataBaseline, a run's last step.

DataValidator checks the run's statistics (checks.py) against the schema and the previous
successful run's statistics (baseline.py). It writes TFX's ExampleAnomalies as ExampleValidator
does (Split-<name>/SchemaDiff.pb, so TFX's tools read them) plus data_validation.json for the
report. With `data_validation: block` it fails when it found anything: Transform waits for it,
so the run stops before Transform and the Trainer, with a message naming the split, the class,
the feature and by how much; with `warn` it logs the same and the run goes on.

RecordDataBaseline runs after the Pusher and the report: only a run that got that far leaves
its statistics as the next run's baseline. Both depend on a folder's state, not only on their
inputs, so they run every time (pipeline.tfx_pipeline.UNCACHED_NODES).
"""

import json
import logging
import os
from typing import Optional

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils, writer_utils

from components.data_validation import baseline, checks
from components.data_validation.spec import DataValidationSpec

logger = logging.getLogger(__name__)

REPORT_FILE = 'data_validation.json'
SCHEMA_DIFF_FILE = 'SchemaDiff.pb'  # TFX ExampleValidator's name
BLESSED_PROPERTY = 'blessed'        # TFX ExampleValidator's custom property: {split: 1 or 0}


class DataValidationError(RuntimeError):
    """The data has anomalies and `data_validation: block`: the message says what and where."""


@component
def DataValidator(  # noqa: N802  (TFX names components like classes)
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    schema: InputArtifact[standard_artifacts.Schema],
    anomalies: OutputArtifact[standard_artifacts.ExampleAnomalies],
    baseline_dir: Parameter[str],
    validation_spec: Parameter[str],
) -> None:
    validation = DataValidationSpec.model_validate_json(validation_spec)
    current = baseline.load(statistics.uri)
    previous_version = baseline.latest(baseline_dir)
    previous = baseline.load(previous_version) if previous_version else None
    imported_schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))
    result = checks.validate(current, imported_schema, validation, previous)

    anomalies.split_names = artifact_utils.encode_split_names(sorted(current))
    for split, split_anomalies in result.anomalies.items():
        writer_utils.write_anomalies(os.path.join(anomalies.uri, f'Split-{split}', SCHEMA_DIFF_FILE), split_anomalies)
    anomalies.set_json_value_custom_property(
        BLESSED_PROPERTY, {split: int(not any(f.split == split for f in result.findings)) for split in current})
    verdict = 'passed' if not result.findings else ('blocked' if validation.mode == 'block' else 'warned')
    report = checks.to_json(result, validation, previous_version, verdict)
    with open_text(os.path.join(anomalies.uri, REPORT_FILE), 'w') as f:
        json.dump(report, f, indent=1)

    logger.info('%s', summary_line(report))
    if not result.findings:
        return
    if validation.mode == 'block':
        # TFX deletes a failed component's output folder: the message is the whole report.
        raise DataValidationError(problems_message(report))
    logger.warning('%s', problems_message(report, os.path.join(anomalies.uri, REPORT_FILE)))


@component
def RecordDataBaseline(  # noqa: N802
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    baseline_dir: Parameter[str],
) -> None:
    splits = artifact_utils.decode_split_names(statistics.split_names)
    version = baseline.record(baseline_dir, statistics.uri, splits, run_id=statistics.uri)
    logger.info('This run\'s data statistics are the next run\'s baseline: %s', version)


def open_text(path: str, mode: str = 'r'):
    import tensorflow as tf
    return tf.io.gfile.GFile(path, mode)


def read_report(anomalies_uri: str):
    """data_validation.json of a DataValidator output, or None."""
    import tensorflow as tf
    path = os.path.join(anomalies_uri, REPORT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with open_text(path) as f:
        return json.load(f)


def summary_line(report: dict) -> str:
    """One line: the verdict, the counts, and what it was compared with."""
    counts = '; '.join(f'{split} {sum(classes.values())} images in {len(classes)} classes'
                       for split, classes in sorted(report['counts'].items()))
    against = ('against the previous successful run' if report['previous_run_statistics']
               else 'against the schema only (no previous successful run)')
    problems = len(report['findings'])
    verdict = {'passed': 'no anomalies', 'blocked': f'{problems} anomalies, run stopped',
               'warned': f'{problems} anomalies, run goes on (data_validation: warn)'}[report['verdict']]
    return f'Data validation {against}: {verdict} ({counts})'


def problems_message(report: dict, report_path: Optional[str] = None) -> str:
    lines = [f'Data validation found {len(report["findings"])} anomalies (data_validation: {report["mode"]}):']
    lines += [f'  {finding["message"]}' for finding in report['findings']]
    if report['previous_run_statistics']:
        lines.append(f'Compared with the previous successful run\'s statistics: {report["previous_run_statistics"]}')
    lines.append('If the change is intended (a new class, another camera), run once with '
                 '--set data_validation=warn: once that run succeeds, its data is the baseline.')
    if report_path:
        lines.append(f'Details, with every drift figure: {report_path}')
    return '\n'.join(lines)
