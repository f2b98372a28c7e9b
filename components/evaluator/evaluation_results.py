"""Reads what the Evaluator (TFMA) measured and decided, in the config's terms."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from components.features import LABEL_KEY


def _metric_name(key) -> str:
    name = key.name
    if key.HasField('aggregation_type') and key.aggregation_type.micro_average:
        name += '_micro'
    return name


def read(uri: str, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """{'overall': {...}, 'baseline': {...}, 'per_class': {class: {...}}, 'gate_failures': [...]}."""
    import tensorflow_model_analysis as tfma
    logging.getLogger('tensorflow').setLevel(logging.ERROR)  # TFMA's reader warns on every call
    result: Dict[str, Any] = {'overall': {}, 'baseline': {}, 'per_class': {}, 'gate_failures': []}
    for metrics in tfma.load_metrics(uri):
        keys = metrics.slice_key.single_slice_keys
        if not keys:
            target = result['overall']
        elif len(keys) == 1 and keys[0].column == LABEL_KEY:
            label = keys[0].int64_value
            name = class_names[label] if class_names and label < len(class_names) else str(label)
            target = result['per_class'].setdefault(name, {})
        else:
            continue
        for key_and_value in metrics.metric_keys_and_values:
            key = key_and_value.key
            if key.is_diff or not key_and_value.value.HasField('double_value'):
                continue
            value = key_and_value.value.double_value.value
            if key.model_name == 'baseline':
                if not keys:
                    result['baseline'][_metric_name(key)] = value
            else:
                target[_metric_name(key)] = value
    validation = tfma.load_validation_result(uri)
    for per_slice in validation.metric_validations_per_slice:
        result['gate_failures'].extend(describe_failure(f) for f in per_slice.failures)
    return result


def describe_failure(failure) -> str:
    """One sentence per failed threshold, in the config's terms."""
    name = failure.metric_key.name
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    if failure.metric_key.is_diff:
        allowed = -threshold.change_threshold.absolute.value
        return (f'{name} changed by {value:+.4f} against the last blessed model; '
                f'allowed drop: {max(allowed, 0):.4f} (max_accuracy_drop)')
    if threshold.value_threshold.HasField('lower_bound'):
        return (f'{name} {value:.4f} is below {threshold.value_threshold.lower_bound.value:.4f} '
                f'(min_accuracy)')
    return failure.message or f'{name} {value:.4f} failed its threshold'


def per_class_table(per_class: Dict[str, Dict[str, float]], metrics: List[str]) -> List[str]:
    """Markdown table rows of per-class slices."""
    rows = ['| class | ' + ' | '.join(metrics) + ' |', '| --- |' + ' --- |' * len(metrics)]
    for name, values in sorted(per_class.items()):
        rows.append(f'| {name} | ' + ' | '.join(f'{values.get(m, float("nan")):.4f}' for m in metrics) + ' |')
    return rows
