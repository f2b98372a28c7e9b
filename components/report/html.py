"""report.html: the run's report as one self-contained web page, for people rather than programs.

summary.json has everything but nobody reads JSON; this renders it with Jinja2
(templates/report.html.j2) into one file that needs nothing else: figures and thumbnails are
inlined as data: URIs, the CSS is in the page (with a print stylesheet), there is no script and
no network request, so it can be mailed, attached to a ticket or opened from a bucket.
Rendering is pure (summary and image bytes in, text out); component.py does the reading.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
from typing import Any, Dict, List, Mapping, Optional

import jinja2
import yaml

REPORT_HTML = 'report.html'
ACCURACY = 'sparse_categorical_accuracy'
# The Evaluator's metric names (components/evaluator/gate.py) as a reader knows them.
METRIC_LABELS = {ACCURACY: 'accuracy', 'example_count': 'test images', 'auc_micro': 'AUC (micro)',
                 'precision_micro': 'precision (micro)', 'recall_micro': 'recall (micro)'}

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), 'templates')),
    # A summary without some section (an older run, no test split) leaves that part out rather
    # than failing the run: the default Undefined renders as nothing.
    autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _number(value: Any, digits: int = 4) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


def _percent(value: Any) -> str:
    return '–' if value is None else f'{100 * value:.1f}%'


def _size(size_bytes: Any) -> str:
    if size_bytes is None:
        return '–'
    for unit, scale in (('MB', 1e6), ('KB', 1e3)):
        if size_bytes >= scale:
            return f'{size_bytes / scale:.2f} {unit}'
    return f'{size_bytes} bytes'


def _cell(value: Any) -> str:
    """A setting's value in a table cell: short, dicts and lists as comma-separated words."""
    if isinstance(value, float):
        return f'{value:.3g}'
    if isinstance(value, bool) or value is None:
        return {True: 'true', False: 'false', None: '–'}[value]
    if isinstance(value, dict):
        return ', '.join(f'{k} {_cell(v)}' for k, v in value.items()) or 'none'
    if isinstance(value, (list, tuple)):
        return ', '.join(_cell(v) for v in value) or 'none'
    return str(value)


def _yaml(value: Any) -> str:
    """A value as a config file has it (YAML, flow style), for config lines people copy."""
    if isinstance(value, (dict, list, tuple)):
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return value if isinstance(value, str) else json.dumps(value)  # true, null, 0.001 as YAML has them


def _metric(key: str) -> str:
    """phase_metrics' keys as words: eval_accuracy -> validation accuracy."""
    split, _, metric = key.partition('_')
    if split in ('eval', 'test', 'train'):
        return f'{"validation" if split == "eval" else split} {metric}'
    return key.replace('_', ' ')


_ENVIRONMENT.filters.update(number=_number, percent=_percent, size=_size, cell=_cell, yaml=_yaml, metric=_metric)


def data_uri(png: Optional[bytes]) -> Optional[str]:
    return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii') if png else None


def _data_rows(summary: Dict[str, Any]) -> Dict[str, Any]:
    """Images per class and split, with totals."""
    data = summary.get('data') or {}
    splits = list(data)
    names = (summary.get('class_names') or sorted({name for counts in data.values() for name in counts})
             if data else [])
    rows = [{'class': name, 'counts': [data[s].get(name, 0) for s in splits],
             'total': sum(data[s].get(name, 0) for s in splits)} for name in names]
    totals = [sum(data[s].values()) for s in splits]
    return {'splits': splits, 'rows': rows, 'totals': totals, 'total': sum(totals)}


def _evaluation(summary: Dict[str, Any]) -> Dict[str, Any]:
    evaluation = summary.get('evaluation') or {}
    overall, baseline = evaluation.get('overall') or {}, evaluation.get('baseline') or {}
    names = [m for m in METRIC_LABELS if m in overall] + sorted(set(overall) - set(METRIC_LABELS))
    metrics = [{'label': METRIC_LABELS.get(m, m), 'value': overall[m], 'baseline': baseline.get(m),
                'count': m == 'example_count', 'gated': m == ACCURACY} for m in names]
    # Per class: the Trainer's precision, recall and F1 (TFMA's per-class accuracy is the recall).
    return {'accuracy': overall.get(ACCURACY), 'baseline_accuracy': baseline.get(ACCURACY),
            'metrics': metrics, 'has_baseline': bool(baseline), 'per_class': summary.get('per_class_test') or [],
            'gate_failures': evaluation.get('gate_failures') or []}


def _phase_value(key: str, value: Any) -> str:
    """Metrics to 4 decimals, timings (training.py's seconds, epochs, images_per_second) as counts."""
    if value is None:
        return '–'
    if key == 'epochs':
        return str(int(value))
    return f'{value:.1f}' if key in ('seconds', 'images_per_second') else f'{value:.4f}'


def _phases(summary: Dict[str, Any]) -> Dict[str, Any]:
    """phase_metrics as a metric-by-phase table (few phases, several metrics: narrow)."""
    phases = summary.get('phase_metrics') or {}
    keys = list(dict.fromkeys(key for metrics in phases.values() for key in metrics))
    return {'phases': list(phases),
            'rows': [{'metric': key, 'values': [_phase_value(key, metrics.get(key)) for metrics in phases.values()]}
                     for key in keys]}


def _tuning(tuning: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The Tuner's trials, one table per stage (as reports.tuning_markdown groups them)."""
    stages = []
    trials = (tuning or {}).get('trials') or []
    for stage in dict.fromkeys(t['stage'] for t in trials):
        rows = [t for t in trials if t['stage'] == stage]
        stages.append({'stage': stage, 'names': list(dict.fromkeys(n for t in rows for n in t['values'])),
                       'trials': rows})
    return stages


def _models(summary: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The SavedModel and each TFLite variant (TFLiteExport's report), when TFLiteExport ran."""
    tflite = summary.get('tflite')
    if not tflite:
        return None
    blessed = summary.get('blessed')
    rows = [{'name': 'SavedModel', **tflite['savedmodel'], 'verdict': 'the reference', 'style': ''}]
    for variant, result in tflite['variants'].items():
        if not result.get('pushed'):
            verdict, style = 'not pushed: ' + result.get('reason', ''), 'bad'
        elif blessed is False:
            verdict, style = 'within budget; not pushed, the model was not blessed', ''
        else:
            verdict, style = 'pushed with the SavedModel', 'ok'
        rows.append({'name': variant, **result, 'verdict': verdict, 'style': style})
    return {'rows': rows, 'test_images': tflite.get('test_images'), 'image_size': tflite.get('image_size'),
            'latency': tflite.get('latency'), 'max_accuracy_drop': tflite.get('max_accuracy_drop')}


def render(summary: Dict[str, Any], images: Mapping[str, bytes], generated: Optional[datetime.datetime] = None) -> str:
    """The page. images: PNG bytes by file name (learning curves, confusion matrix, and the
    thumbnails named in summary['misclassified']); a missing one is left out, not broken."""
    misclassified = summary.get('misclassified')
    mistakes = [dict(item, src=data_uri(images.get(item['thumbnail']))) for item in
                (misclassified or {}).get('images') or []]
    generated = generated or datetime.datetime.now(datetime.timezone.utc)
    return _ENVIRONMENT.get_template('report.html.j2').render(
        summary=summary,
        class_names=summary.get('class_names') or [],
        blessed=summary.get('blessed'),
        gate=summary.get('gate') or {},
        evaluation=_evaluation(summary),
        data=_data_rows(summary),
        ingestion=summary.get('ingestion'),
        data_validation=summary.get('data_validation'),
        phases=_phases(summary),
        recipe=summary.get('recipe'),
        tuning=summary.get('tuning'),
        tuning_stages=_tuning(summary.get('tuning')),
        models=_models(summary),
        misclassified=misclassified,
        mistakes=mistakes,
        learning_curves=data_uri(images.get('learning_curves.png')),
        confusion_matrix=data_uri(images.get('confusion_matrix.png')),
        generated=generated.strftime('%Y-%m-%d %H:%M UTC'),
    )
