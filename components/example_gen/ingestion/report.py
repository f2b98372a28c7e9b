"""The ingestion report: what became of every file, whether the data can train a model, a summary.

ImageExampleGen writes it as `ingestion_report.json` next to the examples and logs the summary:

    layout              class_folders or pre_split
    class_names         label order
    total, counts       images per split and class
    missing_classes     split -> classes without an image there
    skipped             every file or folder not ingested: file, reason (a code of skips.py), detail
    skipped_by_reason   reason -> number of files
    reasons             what each reason code that occurs means
    converted           every file converted at ingestion: file, conversion
    duplicates          groups of files with identical content: their classes and splits, and
                        whether the classes differ (a labelling error) or the splits do (leakage,
                        possible only with pre-split folders)
    dropped_classes     class -> why it was left out (drop_unusable_classes: true)
"""
from __future__ import annotations

import collections
from typing import Any, Dict, Iterable, List, Sequence

from components.example_gen.ingestion import IngestionError, skips

REPORT_FILE = 'ingestion_report.json'
_LISTED = 10  # files per section in the log summary; the JSON file lists them all


def build(layout: str, class_names: Sequence[str], counts: Dict[str, Dict[str, int]],
          skipped: Iterable[Dict[str, str]], converted: Iterable[Dict[str, str]],
          duplicates: Iterable[List[Dict[str, str]]]) -> Dict[str, Any]:
    """counts: split -> class -> images; duplicates: groups of {file, class, split}."""
    counts = {split: {name: per_class.get(name, 0) for name in class_names} for split, per_class in counts.items()}
    skipped = sorted(skipped, key=lambda item: item['file'])
    groups = []
    for files in duplicates:
        files = sorted(files, key=lambda item: item['file'])
        groups.append({
            'files': files,
            'conflicting_labels': len({item['class'] for item in files}) > 1,
            'across_splits': len({item['split'] for item in files}) > 1,
        })
    return {
        'layout': layout,
        'class_names': list(class_names),
        'total': sum(sum(per_class.values()) for per_class in counts.values()),
        'counts': counts,
        'missing_classes': {split: [name for name, n in per_class.items() if n == 0]
                            for split, per_class in counts.items() if 0 in per_class.values()},
        'skipped': skipped,
        'skipped_by_reason': dict(sorted(collections.Counter(item['reason'] for item in skipped).items())),
        'reasons': {reason: skips.EXPLANATIONS[reason] for reason in sorted({item['reason'] for item in skipped})},
        'converted': sorted(converted, key=lambda item: item['file']),
        'duplicates': sorted(groups, key=lambda group: group['files'][0]['file']),
        'dropped_classes': {},
    }


def unusable_classes(report: Dict[str, Any]) -> Dict[str, str]:
    """Classes a model can neither learn nor be tested on: class -> why."""
    counts = report['counts']
    unusable = {}
    for name in report['class_names']:
        if sum(counts[split][name] for split in counts) == 0:
            unusable[name] = 'no usable image'
        elif counts['train'][name] == 0 or counts['test'][name] == 0:
            missing = [split for split in ('train', 'test') if counts[split][name] == 0]
            unusable[name] = f'no image in the {" and ".join(missing)} split'
    return unusable


def check(report: Dict[str, Any]) -> None:
    """Raises IngestionError, naming the classes or split, on data that cannot train and test a model."""
    unusable = unusable_classes(report)
    if unusable:
        raise IngestionError(
            'class(es) without images where they are needed: '
            + '; '.join(f'{name}: {why}' for name, why in unusable.items())
            + '. Add images (see the skipped files in the report), change split_ratios, or set '
              'drop_unusable_classes: true to train without these classes.')
    if len(report['class_names']) < 2:
        raise IngestionError(f'at least two classes are needed, {len(report["class_names"])} left: '
                             f'{report["class_names"]}')
    empty = [split for split, per_class in report['counts'].items() if sum(per_class.values()) == 0]
    if empty:
        raise IngestionError(f'split(s) {", ".join(empty)} received no images out of {report["total"]}: '
                             f'add images or raise their share in split_ratios')


def format_summary(report: Dict[str, Any]) -> str:
    """A few lines for the run log: images per class and split, then what was not as expected."""
    splits = list(report['counts'])
    names = report['class_names']
    width = max(len(name) for name in names + ['class'])
    lines = [f'Ingested {report["total"]} images of {len(names)} classes ({report["layout"]}): '
             f'skipped {len(report["skipped"])}, converted {len(report["converted"])}, '
             f'{len(report["duplicates"])} groups of duplicates.',
             '  ' + 'class'.ljust(width) + ''.join(f'{split:>8}' for split in splits)]
    for name in names:
        lines.append('  ' + name.ljust(width) + ''.join(f'{report["counts"][s][name]:>8}' for s in splits))
    for split, missing in report['missing_classes'].items():
        lines.append(f'  split {split} has no image of: {", ".join(missing)}')
    for name, why in report['dropped_classes'].items():
        lines.append(f'  dropped class {name}: {why}')
    if report['skipped']:
        lines.append('  skipped: ' + ', '.join(f'{n} {reason}' for reason, n in report['skipped_by_reason'].items()))
        lines += [f'    {item["file"]}: {item["reason"]} ({item["detail"]})' if item['detail']
                  else f'    {item["file"]}: {item["reason"]}' for item in report['skipped'][:_LISTED]]
    conversions = collections.Counter(item['conversion'].split(',')[0] for item in report['converted'])
    if conversions:
        lines.append('  converted: ' + ', '.join(f'{n} {kind}' for kind, n in sorted(conversions.items())))
    conflicting = [group for group in report['duplicates'] if group['conflicting_labels']]
    for group in conflicting[:_LISTED]:
        lines.append('  labelling error, same image in several classes: '
                     + ', '.join(item['file'] for item in group['files']))
    leaking = [group for group in report['duplicates'] if group['across_splits']]
    for group in leaking[:_LISTED]:
        lines.append('  leakage, same image in several splits: '
                     + ', '.join(f'{item["file"]} ({item["split"]})' for item in group['files']))
    if any(len(items) > _LISTED for items in (report['skipped'], conflicting, leaking)):
        lines.append(f'  ... more in {REPORT_FILE}')
    return '\n'.join(lines)
