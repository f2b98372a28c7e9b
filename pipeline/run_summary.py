"""What happened in a pipeline run, read back from ML Metadata.

    python -m pipeline.run_summary --config pipeline/config.yaml

prints, for the latest run: each component and whether it ran, was reused from cache or
failed; the test accuracy against the gate (and the baseline, when there was one); whether
the model was blessed; and where it was pushed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Optional

from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import ConfigError, PipelineConfig, add_config_arguments, load_config

_STATE_NAMES = {1: 'new', 2: 'running', 3: 'ran', 4: 'failed', 5: 'reused (cache)', 6: 'canceled'}


@dataclasses.dataclass
class NodeResult:
    node_id: str
    state: str
    seconds: float


@dataclasses.dataclass
class RunSummary:
    run_id: str
    nodes: List[NodeResult]
    accuracy: Optional[float] = None
    baseline_accuracy: Optional[float] = None
    blessed: Optional[bool] = None
    gate_failures: List[str] = dataclasses.field(default_factory=list)
    pushed_version: Optional[str] = None
    pushed_destination: Optional[str] = None
    model_uri: Optional[str] = None
    report_uri: Optional[str] = None
    # TFLiteExport's report (components/tflite/export.py), when it ran.
    tflite: Optional[dict] = None
    # DataValidator's data_validation.json (components/data_validation), when it passed or warned.
    data_validation: Optional[dict] = None
    # The Trainer's strategy, replicas, devices and precision policy, in words.
    trainer_devices: Optional[str] = None


def _store(config: PipelineConfig):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    return metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(config.metadata_path))


def latest_run(config: PipelineConfig) -> Optional[RunSummary]:
    """The summary of the newest run of config.pipeline_name, or None if there is none."""
    if '://' not in config.metadata_path and not os.path.exists(config.metadata_path):
        return None
    store = _store(config)
    runs = [c for c in store.get_contexts_by_type('pipeline_run')
            if any(p.name == config.pipeline_name for p in store.get_parent_contexts_by_context(c.id))]
    if not runs:
        return None
    run = max(runs, key=lambda c: c.create_time_since_epoch)
    run_executions = {e.id: e for e in store.get_executions_by_context(run.id)}
    node_prefix = config.pipeline_name + '.'
    nodes = []
    for node in sorted(store.get_contexts_by_type('node'), key=lambda c: c.id):
        if not node.name.startswith(node_prefix):
            continue
        for execution in store.get_executions_by_context(node.id):
            if execution.id in run_executions:
                seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
                nodes.append(NodeResult(node.name[len(node_prefix):],
                                        _STATE_NAMES.get(execution.last_known_state, '?'), seconds))
    summary = RunSummary(run_id=run.name, nodes=nodes)
    _add_outputs(store, list(run_executions), summary)
    return summary


def _outputs_by_key(store, execution_ids: List[int]) -> Dict[str, list]:
    """The run's output artifacts by their output key (`model`, `blessing`, ...): by key, not by
    type, because the Trainer and ServedModelBaseline both output a Model."""
    events = [e for e in store.get_events_by_execution_ids(execution_ids) if e.type == e.OUTPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    by_key: Dict[str, list] = {}
    for event in events:
        by_key.setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
    return by_key


def _add_outputs(store, execution_ids: List[int], summary: RunSummary) -> None:
    outputs = _outputs_by_key(store, execution_ids)
    for blessing in outputs.get('blessing', []):
        summary.blessed = bool(blessing.custom_properties['blessed'].int_value)
    for model in outputs.get('model', []):
        summary.model_uri = model.uri
    for pushed in outputs.get('pushed_model', []):
        if pushed.custom_properties['pushed'].int_value:
            summary.pushed_version = pushed.custom_properties['pushed_version'].string_value
            summary.pushed_destination = pushed.custom_properties['pushed_destination'].string_value
    for evaluation in outputs.get('evaluation', []):
        _add_evaluation(evaluation.uri, summary)
    for report in outputs.get('report', []):
        summary.report_uri = report.uri
    for anomalies in outputs.get('anomalies', []):
        from components.data_validation.component import read_report
        summary.data_validation = read_report(anomalies.uri)
    for model_run in outputs.get('model_run', []):
        summary.trainer_devices = _trainer_devices(model_run.uri)
    for exported in outputs.get('exported', []):
        from components.tflite.component import read_report
        summary.tflite = read_report(exported.uri)


def _trainer_devices(model_run_uri: str) -> Optional[str]:
    from components.trainer import reports
    path = os.path.join(model_run_uri, reports.TRAINING_SUMMARY_FILE)
    if '://' not in path and not os.path.exists(path):
        return None
    return (reports.read_json(path).get('devices') or {}).get('description')


def _add_evaluation(uri: str, summary: RunSummary) -> None:
    from components.evaluator import evaluation_results
    from components.evaluator.gate import ACCURACY_METRIC
    evaluation = evaluation_results.read(uri)
    summary.accuracy = evaluation['overall'].get(ACCURACY_METRIC)
    summary.baseline_accuracy = evaluation['baseline'].get(ACCURACY_METRIC)
    summary.gate_failures = evaluation['gate_failures']


def format_summary(summary: RunSummary) -> str:
    lines = [f'Run {summary.run_id}:']
    for node in summary.nodes:
        lines.append(f'  {node.node_id:<32} {node.state:<15} {node.seconds:7.1f} s')
    if summary.data_validation:
        from components.data_validation.component import summary_line
        lines.append('  data: ' + summary_line(summary.data_validation))
        lines.extend(f'    {finding["message"]}' for finding in summary.data_validation['findings'])
    if summary.trainer_devices:
        lines.append(f'  trained on: {summary.trainer_devices}')
    if summary.accuracy is not None:
        line = f'  test accuracy {summary.accuracy:.4f}'
        if summary.baseline_accuracy is not None:
            line += f' (last blessed model: {summary.baseline_accuracy:.4f})'
        lines.append(line)
    if summary.blessed is not None:
        lines.append('  gate: ' + ('passed, model blessed' if summary.blessed else 'FAILED, model not blessed'))
        lines.extend(f'    {failure}' for failure in summary.gate_failures)
    if summary.report_uri:
        lines.append(f'  report: {summary.report_uri}/report.html (one page; summary.md and the figures '
                     f'beside it)')
    if summary.tflite:
        lines.append('  TFLite: ' + '; '.join(_tflite_line(variant, result)
                                               for variant, result in summary.tflite['variants'].items()))
    if summary.pushed_destination:
        lines.append(f'  pushed: {summary.pushed_destination}')
    elif summary.blessed is not None:
        lines.append('  pushed: nothing (the serving directory is unchanged)')
    return '\n'.join(lines)


def _tflite_line(variant: str, result: dict) -> str:
    if result.get('accuracy') is None:
        return f'{variant} refused ({result.get("reason")})'
    verdict = 'within budget' if result.get('pushed') else f'refused, drop {result["accuracy_drop"]:+.4f}'
    return f'{variant} {result["accuracy"]:.4f}, {result["size_bytes"] / 1e6:.1f} MB ({verdict})'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    summary = latest_run(config)
    if summary is None:
        print(f'No run of {config.pipeline_name} recorded in {config.metadata_path}')
        return 1
    print(format_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
