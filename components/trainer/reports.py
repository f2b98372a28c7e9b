"""The figures and tables people look at first: learning curves, confusion matrix, summary.

Written next to the model by the Trainer (model_run folder) and gathered, with the
Evaluator's verdict, by the ModelReport component (components/report/component.py).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

LEARNING_CURVES_FILE = 'learning_curves.png'
CONFUSION_MATRIX_FILE = 'confusion_matrix.png'
TRAINING_SUMMARY_FILE = 'training_summary.json'


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _save(figure, path: str) -> None:
    with tf.io.gfile.GFile(path, 'wb') as f:
        figure.savefig(f, format='png', dpi=100, bbox_inches='tight')


def learning_curves(history: Dict[str, List[float]], fine_tune_start: Optional[int], path: str):
    """Accuracy and loss per epoch, training and validation, fine-tuning's start marked.

    The figure of TensorFlow's transfer-learning tutorial; returns it for inspection.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    epochs = np.arange(1, len(history.get('loss', [])) + 1)
    for axis, metric, title in ((axes[0], 'accuracy', 'Accuracy'), (axes[1], 'loss', 'Loss')):
        for prefix, label in (('', 'Training'), ('val_', 'Validation')):
            values = history.get(prefix + metric)
            if values:
                axis.plot(epochs[:len(values)], values, marker='.', label=f'{label} {metric}')
        if fine_tune_start:
            axis.axvline(fine_tune_start + 0.5, color='green', linestyle='--', label='Start fine-tuning')
        axis.set_title(f'Training and validation {metric}')
        axis.set_ylabel(title)
        axis.legend(loc='lower right' if metric == 'accuracy' else 'upper right')
        axis.grid(alpha=0.3)
    axes[1].set_xlabel('epoch')
    _save(figure, path)
    plt.close(figure)
    return figure


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], path: str):
    plt = _pyplot()
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap='Blues')
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha='right')
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel('predicted class')
    axis.set_ylabel('true class')
    axis.set_title(f'Confusion matrix, test split ({int(matrix.sum())} images)')
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha='center', va='center',
                  color='white' if count > threshold else 'black')
    _save(figure, path)
    plt.close(figure)
    return figure


def per_class_metrics(matrix: np.ndarray, class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    rows = []
    for index, name in enumerate(class_names):
        true_positive = matrix[index, index]
        predicted = matrix[:, index].sum()
        actual = matrix[index, :].sum()
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({'class': name, 'precision': float(precision), 'recall': float(recall),
                     'f1': float(f1), 'support': int(actual)})
    return rows


def write_json(data: Dict[str, Any], path: str) -> None:
    with tf.io.gfile.GFile(path, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=False)


def read_json(path: str) -> Dict[str, Any]:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def markdown(summary: Dict[str, Any]) -> str:
    """A short human-readable model summary."""
    lines = ['# Model summary', '']
    data = summary.get('data', {})
    if data:
        splits = list(data)
        lines += ['## Data', '', '| class | ' + ' | '.join(splits) + ' |',
                  '| --- |' + ' --- |' * len(splits)]
        for name in summary['class_names']:
            lines.append(f'| {name} | ' + ' | '.join(str(data[s].get(name, 0)) for s in splits) + ' |')
        lines.append('')
    if summary.get('data_validation'):
        lines += data_validation_markdown(summary['data_validation'])
    lines += ['## Model', '']
    for backbone in summary.get('backbones', []):
        lines.append(f'- backbone {backbone["name"]} at {backbone["image_size"]} px, weights '
                     f'{backbone["weights"]}, fine-tuning from {backbone["fine_tune_at"]!r}')
    if summary.get('devices'):
        lines.append(f'- trained on: {summary["devices"]["description"]}')
    for key, value in summary.get('hyperparameters', {}).items():
        lines.append(f'- {key}: {value}')
    lines.append('')
    if summary.get('recipe'):
        lines += recipe_markdown(summary['recipe'])
    if summary.get('phase_metrics'):
        lines += ['## Metrics after each phase', '', '| phase | metric | value |', '| --- | --- | --- |']
        for phase, metrics in summary['phase_metrics'].items():
            for key, value in metrics.items():
                lines.append(f'| {phase} | {key} | {value:.4f} |')
        lines.append('')
    if summary.get('per_class_test'):
        lines += ['## Test split per class', '', '| class | precision | recall | F1 | images |',
                  '| --- | --- | --- | --- | --- |']
        for row in summary['per_class_test']:
            lines.append(f'| {row["class"]} | {row["precision"]:.3f} | {row["recall"]:.3f} | {row["f1"]:.3f} '
                         f'| {row["support"]} |')
        lines.append('')
    if summary.get('tuning'):
        lines += tuning_markdown(summary['tuning'])
    if 'evaluation' in summary:
        from components.evaluator.evaluation_results import per_class_table
        evaluation = summary['evaluation']
        lines += ['## Evaluator (TFMA, test split)', '']
        for key, value in evaluation.get('overall', {}).items():
            baseline = evaluation.get('baseline', {}).get(key)
            lines.append(f'- {key}: {value:.4f}' + (f' (last blessed model: {baseline:.4f})' if baseline else ''))
        for failure in evaluation.get('gate_failures', []):
            lines.append(f'- gate failure: {failure}')
        if evaluation.get('per_class'):
            lines += ['', 'Per class (slices on the label; reported, not gated):', '']
            lines += per_class_table(evaluation['per_class'], ['example_count', 'sparse_categorical_accuracy'])
        lines.append('')
    if summary.get('tflite'):
        lines += tflite_markdown(summary['tflite'], summary.get('blessed'))
    if 'blessed' in summary:
        lines += [f'**Blessed: {"yes, pushed" if summary["blessed"] else "no, not pushed"}**', '']
    return '\n'.join(lines)


def tflite_markdown(tflite: Dict[str, Any], blessed: Optional[bool]) -> List[str]:
    """TFLiteExport's report (components/tflite/export.py): each variant against the SavedModel."""
    reference = tflite['savedmodel']
    lines = ['## TFLite variants (test split, against the SavedModel)', '',
             f'{tflite["test_images"]} test images at {tflite["image_size"]} px; latency: {tflite["latency"]}; '
             f'budget: max_tflite_accuracy_drop {tflite["max_accuracy_drop"]}.', '',
             '| model | size (bytes) | test accuracy | drop | ms per image | within budget |',
             '| --- | --- | --- | --- | --- | --- |']

    def row(name, result, verdict):
        accuracy = result.get('accuracy')
        drop = result.get('accuracy_drop')
        latency = result.get('latency_ms')
        return (f'| {name} | {result.get("size_bytes", "-")} | {"-" if accuracy is None else f"{accuracy:.4f}"} '
                f'| {"-" if drop is None else f"{drop:+.4f}"} | {"-" if latency is None else f"{latency:.1f}"} '
                f'| {verdict} |')
    lines.append(row('SavedModel', reference, '(reference)'))
    for variant, result in tflite['variants'].items():
        lines.append(row(variant, result, 'yes' if result.get('pushed') else 'no: ' + result.get('reason', '')))
    accepted = tflite.get('pushed') or []
    where = ', '.join(f'tflite/{v}.tflite' for v in accepted)
    if not accepted:
        lines += ['', 'No variant was within budget: the SavedModel goes alone.']
    elif blessed is False:
        lines += ['', f'Within budget: {where}; the model was not blessed, so none was pushed.']
    else:
        lines += ['', f'Pushed with the SavedModel: {where} (with tflite/labels.txt and tflite/model_info.json).']
    lines.append('')
    return lines


def recipe_markdown(recipe: Dict[str, Any]) -> List[str]:
    """What the recipe chose and why (the Trainer's training summary `recipe`)."""
    lines = [f'## Recipe: {recipe["recipe"]}', '']
    if recipe.get('chosen'):
        lines.append('Chosen: ' + ', '.join(f'{key} {_cell(value)}' for key, value in recipe['chosen'].items()) + '.')
    candidates = recipe.get('head_candidates') or []
    if candidates:
        best = min(candidates, key=lambda c: c['val_loss'])
        lines += ['', 'Heads tried on cached backbone features (lowest validation loss chosen):', '',
                  '| learning_rate | dropout | head_l2 | val_loss | val_accuracy | best epoch | s |',
                  '| --- | --- | --- | --- | --- | --- | --- |']
        for c in candidates:
            mark = ' **chosen**' if c is best else ''
            lines.append(f'| {c["learning_rate"]:g}{mark} | {c["dropout"]:g} | {c["head_l2"]:g} | {c["val_loss"]:.4f} '
                         f'| {c["val_accuracy"]:.4f} | {c["best_epoch"]} of {c["epochs_run"]} | {c["seconds"]:.1f} |')
    trials = recipe.get('augmentation_candidates') or []
    if trials:
        lines += ['', 'Augmentation for fine-tuning (a head on un-augmented + augmented features):', '']
        for t in trials:
            what = ', '.join(f'{k} {v}' for k, v in t['augmentation'].items() if v) if t['augmentation'] else 'none'
            lines.append(f'- {what}: validation loss {t["val_loss"]:.4f}')
    if recipe.get('kept_head_only_model'):
        metric = (recipe.get('chosen') or {}).get('early_stopping_metric') or 'val_loss'
        lines += ['', f'Fine-tuning did not beat the head-only model on {metric.replace("_", "idation ", 1)}: the '
                      f'model kept is the one phase 1 trained.']
    if recipe.get('hyperparameters_from_tuner'):
        lines += ['', 'From the Tuner: ' + ', '.join(f'{k} {_cell(v)}' for k, v in
                                                      recipe['hyperparameters_from_tuner'].items()) + '.']
    if recipe.get('reproduce_with'):
        lines += ['', 'The same training with `recipe: tutorial`: ' + ', '.join(
            f'`{k}: {_cell(v)}`' for k, v in recipe['reproduce_with'].items() if k != 'recipe') + '.']
    lines.append('')
    return lines


_STAGE_TITLES = {'head': 'head on cached backbone features', 'fine_tune': 'fine-tuning, best head values fixed'}


def tuning_markdown(tuning: Dict[str, Any]) -> List[str]:
    """The Tuner's trials (ModelReport's `tuning`: components/report/component.tuning_trials), one
    table per stage sorted by score, the trial whose values the Trainer got marked."""
    trials = tuning.get('trials', [])
    lines = ['## Tuner', '', f'{len(trials)} trials, scored by {tuning.get("objective", "val_loss")}; '
             f'the Trainer got the values of trial {tuning.get("chosen_trial")} (**chosen**).', '']
    for stage in dict.fromkeys(t['stage'] for t in trials):
        rows = [t for t in trials if t['stage'] == stage]
        names = list(dict.fromkeys(name for t in rows for name in t['values']))
        lines += [f'Stage {stage} ({_STAGE_TITLES.get(stage, stage)}):', '',
                  '| trial | score | ' + ' | '.join(names) + ' |', '| --- | --- |' + ' --- |' * len(names)]
        for t in rows:
            cells = [_cell(t['values'].get(name, '')) for name in names]
            trial = f'**{t["trial_id"]} chosen**' if t.get('chosen') else t['trial_id']
            lines.append(f'| {trial} | {t["score"]:.4f} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    return lines


def _cell(value: Any) -> str:
    return f'{value:.3g}' if isinstance(value, float) else str(value)


def data_validation_markdown(report: Dict[str, Any]) -> List[str]:
    """DataValidator's verdict, its anomalies (or none), and the drift of each split from the
    previous successful run (components/data_validation/checks.py)."""
    lines = ['## Data checks', '', f'Verdict: {report["verdict"]} (data_validation: {report["mode"]}); '
             + ('compared with the previous successful run.' if report.get('previous_run_statistics')
                else 'no previous successful run: checked against the schema only.'), '']
    if report['findings']:
        lines += [f'- {finding["message"]}' for finding in report['findings']]
    else:
        lines.append('Anomalies: none.')
    if report.get('not_measured'):
        lines += ['', 'Drift not measured (too few images): ' + '; '.join(report['not_measured']) + '.']
    split_drift = [d for d in report['drift'] if not d.get('class_name')]
    if split_drift:
        lines += ['', '| split | feature | drift | value | threshold |', '| --- | --- | --- | --- | --- |']
        lines += [f'| {d["split"]} | {d["feature"]} | {d["measure"]} | {d["value"]:.4f} | {d["threshold"]} |'
                  for d in split_drift]
    lines.append('')
    return lines


def write_markdown(summary: Dict[str, Any], path: str) -> None:
    with tf.io.gfile.GFile(path, 'w') as f:
        f.write(markdown(summary))
