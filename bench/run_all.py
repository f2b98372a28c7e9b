"""`make bench`: every benchmark, one after another, then bench/RESULTS.md.

    python -m bench.run_all [--quick] [--only recipe input_pipeline pipeline_costs ...]

Runs on an otherwise idle machine (the figures are times). RESULTS.md starts with the
performance targets and whether this run met them, then includes every result file.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.report import RESULTS_DIR

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# In order: input_pipeline and pipeline_costs read what recipe leaves in bench/.work, and
# preprocessing_choices and fine_tune_schedule the image sets recipe exports there.
ALL = ('recipe', 'input_pipeline', 'pipeline_costs', 'ingestion', 'linear_probe', 'heads', 'preprocessing_choices',
       'fine_tune_schedule', 'tflite_variants', 'data_drift', 'flink_runner', 'frozen_bottom')
DATASETS = BENCH / '.work' / 'datasets'
# Benchmarks run more than once, with these arguments each time (others: once, no arguments).
INVOCATIONS = {
    'preprocessing_choices': [[str(DATASETS / 'openclipart')], [str(DATASETS / 'tuxpaint')]],
    'fine_tune_schedule': [[], ['--augmentation', 'flip'],
                           ['--augmentation', 'flip', '--data', str(DATASETS / 'tuxpaint')]],
}
# Their result files, when not <name>.md.
RESULT_FILES = {'fine_tune_schedule': ['fine_tune_schedule', 'fine_tune_schedule-flip',
                                       'fine_tune_schedule-flip-tuxpaint']}
# Too slow or too data-hungry for --quick (and their results have no -quick variant).
NOT_QUICK = ('preprocessing_choices', 'fine_tune_schedule', 'data_drift', 'frozen_bottom')
QUICK_FLAGS = {'recipe': ['--quick'], 'tflite_variants': ['--quick'], 'input_pipeline': ['--quick', '--epochs', '1'],
               'pipeline_costs': ['--quick'], 'ingestion': ['--files', '1000'],
               'linear_probe': ['--per-class', '20', '--test-per-class', '20', '--few', '5'],
               'heads': ['--per-class', '20', '--test-per-class', '20', '--epochs', '2', '--size', '96'],
               'flink_runner': ['--quick']}


def _load(name: str, quick: bool):
    path = RESULTS_DIR / (f'{name}-quick.json' if quick and name != 'input_pipeline' else f'{name}.json')
    return json.loads(path.read_text()) if path.exists() else None


def targets(quick: bool) -> list:
    """(target, figure, met?) rows from the JSON results of this run."""
    rows = []
    recipe = _load('recipe', quick)
    for name, runs in (recipe or {}).get('sets', {}).items():
        plain = runs.get('plain')
        for run_name in ('auto', 'tuning'):
            run = runs.get(run_name)
            if not (plain and run):
                continue
            # The targets are recipe auto's; tuning's figures are reported beside them.
            target = run_name == 'auto'
            ratio = run['seconds'] / plain['seconds']
            same_run = run.get('commit') == plain.get('commit')  # else the machine's load differed too
            rows.append((f'{name}, {run_name}: whole pipeline / plain script' + (' <= 1.0' if target else ''),
                         f'{ratio:.2f} ({run["seconds"]:.0f} s / {plain["seconds"]:.0f} s)' if same_run else
                         f'not measured in the same run (pipeline at {run.get("commit")}, script at '
                         f'{plain.get("commit")})', (ratio <= 1.0 if same_run else False) if target else None))
            phases = run['phases']
            final = phases.get('fine-tuning', phases['head'])['test_accuracy']
            gain = 100 * (final - plain['fine_tune_test_accuracy'])
            rows.append((f'{name}, {run_name}: final test accuracy' + (' >= plain script\'s + 5 points' if target
                                                                       else ' against the plain script\'s'),
                         f'{final:.4f} vs {plain["fine_tune_test_accuracy"]:.4f} ({gain:+.1f})',
                         gain >= 5 if target else None))
            frozen = phases['head']['test_accuracy']
            kept_head = (run.get('recipe') or {}).get('kept_head_only_model')
            rows.append((f'{name}, {run_name}: fine-tuning improves on the frozen phase, or the head-only model '
                         f'is kept and reported', f'{frozen:.4f} -> {final:.4f}' + (
                             ' (head-only model kept)' if kept_head else ''), final > frozen or bool(kept_head)))
        if 'no-aug' in runs and 'no-aug-raw' in runs:
            cached, raw = runs['no-aug']['phases']['head'], runs['no-aug-raw']['phases']['head']
            speedup = raw['seconds'] / cached['seconds']
            accuracy_gap = abs(cached['test_accuracy'] - raw['test_accuracy'])
            rows.append(('cached features: frozen phase >= 5x faster', f'{speedup:.1f}x', speedup >= 5))
            rows.append(('cached features: equal accuracy (+-0.5 points)', f'{100 * accuracy_gap:.2f} points',
                         accuracy_gap <= 0.005))
    pipeline_input = _load('input_pipeline', quick)
    if pipeline_input:
        for phase in ('frozen', 'fine-tuning'):
            figures = pipeline_input[phase]
            ratio = figures['pipeline'] / figures['in_memory']
            rows.append((f'input pipeline / in-memory tensors, {phase} >= 0.9', f'{ratio:.2f}', ratio >= 0.9))
        ratio = pipeline_input['frozen']['through_backbone'] / pipeline_input['forward']
        rows.append(('frozen phase (images through the backbone/s) / backbone inference >= 0.8', f'{ratio:.2f}',
                     ratio >= 0.8))
    costs = _load('pipeline_costs', quick)
    if costs:
        peaks = {int(n): t['peak_rss'] for n, t in costs['transform'].items()}
        small, large = min(peaks), max(peaks)
        rows.append(('Transform peak RSS <= 4 GiB', ', '.join(f'{n} images {p / 2 ** 30:.2f} GiB'
                                                               for n, p in sorted(peaks.items())),
                     max(peaks.values()) <= 4 * 2 ** 30))
        growth = peaks[large] / peaks[small]
        rows.append(('Transform peak RSS not growing with the images', f'x{growth:.2f} for x{large // small} images',
                     growth < 1.2))
        before, after = costs['evaluator']['multi_processing'], costs['evaluator']['in_memory']
        rows.append(('Evaluator with a baseline: time and memory down (multi_processing before, in_memory now)',
                     f'{before["seconds"]:.1f} s / {before["peak_rss"] / 2 ** 30:.2f} GiB -> '
                     f'{after["seconds"]:.1f} s / {after["peak_rss"] / 2 ** 30:.2f} GiB',
                     after['seconds'] < before['seconds'] and after['peak_rss'] < before['peak_rss']))
        serving = costs['serving']
        rows.append(('serving (no target): one image p50 / p99; batch of 32',
                     f'{serving["p50_ms"]:.1f} / {serving["p99_ms"]:.1f} ms; '
                     f'{serving["batch32_images_per_second"]:.0f} images/s', None))
        leaks = costs['leaks']
        left = {run: leak['tmp'] + leak['home'] for run, leak in leaks.items()}
        rows.append(('bytes left in TMPDIR and HOME after a run: 0', ', '.join(f'{r}: {b}' for r, b in left.items()),
                     all(b == 0 for b in left.values())))
    tflite = _load('tflite_variants', quick)
    if tflite:
        variants = tflite['report']['variants']
        if variants.get('int8', {}).get('accuracy') is not None and variants.get('float32', {}).get('accuracy'):
            gap = 100 * (variants['float32']['accuracy'] - variants['int8']['accuracy'])
            rows.append((f'TFLite int8 within 1 point of float32 ({tflite["set"]})',
                         f'{variants["int8"]["accuracy"]:.4f} vs {variants["float32"]["accuracy"]:.4f} ({gap:+.1f})',
                         gap <= 1.0))
    return rows


def write_results(quick: bool) -> Path:
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    lines = ['# Benchmark results', '',
             f'Written by `make bench{" QUICK=1" if quick else ""}` (`python -m bench.run_all'
             f'{" --quick" if quick else ""}`) on {datetime.date.today()} at commit {commit}, {platform.machine()}, '
             f'{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, from the result files '
             f'below; each names the command and commit that produced it (`--only NAME ...` re-runs some).',
             '', '## Targets', '', '| target | figures | met |', '| --- | --- | --- |']
    verdicts = {True: 'yes', False: '**no**', None: '-'}
    lines += [f'| {target} | {figure} | {verdicts[met]} |' for target, figure, met in targets(quick)]
    suffix = '-quick' if quick else ''
    for name in ALL:
        if quick and name in NOT_QUICK:
            continue
        for result in RESULT_FILES.get(name, [name]):
            path = RESULTS_DIR / f'{result}{suffix if name != "input_pipeline" else ""}.md'
            if path.exists():
                lines += ['', '---', '', path.read_text().replace('\n# ', '\n## ', 1).replace('# ', '## ', 1)]
    out = BENCH / ('RESULTS-quick.md' if quick else 'RESULTS.md')
    out.write_text('\n'.join(lines) + '\n')
    print(f'wrote {out}')
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--only', nargs='+', choices=ALL, default=list(ALL))
    parser.add_argument('--report-only', action='store_true', help='only rebuild RESULTS.md')
    args = parser.parse_args(argv)
    if not args.report_only:
        for name in args.only:
            if args.quick and name in NOT_QUICK:
                continue
            if name == 'preprocessing_choices':
                for image_set in ('openclipart', 'tuxpaint'):
                    subprocess.run([sys.executable, '-m', 'bench.datasets', image_set, '--out',
                                    str(DATASETS / image_set)], cwd=REPO, check=True)
            for flags in ([QUICK_FLAGS[name]] if args.quick else INVOCATIONS.get(name, [[]])):
                print(f'== bench.{name} {" ".join(flags)}', flush=True)
                subprocess.run([sys.executable, '-m', f'bench.{name}', *flags], cwd=REPO, check=True)
    write_results(args.quick)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
