"""The pipeline against the plain tutorial script, on the same real data, in the same run.

    python -m bench.recipe [--quick] [--sets fashion_mnist tuxpaint openclipart] [--runs plain auto tuning ...] [--keep] [--repeat N]

Data, exported as pre-split folders (train/, validation/, test/):
  fashion_mnist  Fashion-MNIST from Debian's `dataset-fashion-mnist` (MIT): train/ 200 images
                 per class (2,000), validation/ 50 per class, both from its training set, test/
                 100 per class from its test set; 10 classes of 28 px grayscale photos.
  tuxpaint       Tux Paint's stamps (Debian `tuxpaint-stamps-default`, GPL-2+): 446 cut-out
                 photos and drawings with transparency, 6 classes (bench/datasets.py).
  openclipart    Open Clip Art (Debian `openclipart-png`, public domain): 1,207 clip-art
                 drawings with transparency, 6 classes (bench/datasets.py).
Every run uses MobileNetV2 at 160 px with the torchvision-converted ImageNet weights.

Runs, one after another on the same folders:
  plain        bench/plain_keras.py: image_dataset_from_directory and the tutorial's code
               (10 epochs frozen with Adam 1e-4, then 10 from layer 100 with RMSprop 1e-5)
  auto         python -m pipeline.local_runner with the defaults (recipe: auto), but no TFLite
               variants (`tflite: []`: the script makes none; bench/tflite_variants.py measures them)
  tuning       the same with `tuning: {}` (the Tuner component's default budget)
  no-aug       fashion_mnist only: recipe tutorial without augmentation, phase 1 only, backbone
               features cached
  no-aug-raw   the same without the feature cache (what the cache saves in the frozen phase)

--quick: fashion_mnist only, 20 / 10 / 20 images per class, 96 px, 2 + 2 epochs for the plain
script and at most 2 fine-tuning epochs for the pipeline (minutes, for a smoke test).
--repeat N: every run N times, interleaved (plain, auto, plain, auto, ...); the recorded time is
the median and the table lists each (identical runs differ by 10% to 50% here).
Writes bench/results/recipe.md and recipe.json (read by bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from bench import measure
from bench.report import RESULTS_DIR, write_table

REPO = Path(__file__).resolve().parent.parent
FULL = dict(train=200, validation=50, test=100, size=160, epochs=(10, 10))
QUICK = dict(train=20, validation=10, test=20, size=96, epochs=(2, 2))
SETS = ('fashion_mnist', 'tuxpaint', 'openclipart')
RUNS = ('plain', 'auto', 'tuning', 'no-aug', 'no-aug-raw')
# Only on fashion_mnist: the frozen phase alone, with and without the feature cache.
CACHE_RUNS = ('no-aug', 'no-aug-raw')


def export_data(work: Path, sizes: dict) -> Path:
    """Fashion-MNIST as pre-split folders, written by pipeline.fashion_mnist (the sample data's code)."""
    from pipeline import fashion_mnist
    data = work / 'data'
    if data.exists():
        shutil.rmtree(data)
    plan = [('train', 'train', sizes['train'], 0), ('validation', 'train', sizes['validation'], sizes['train']),
            ('test', 'test', sizes['test'], 0)]
    for folder, source, per_class, skip in plan:
        for _ in fashion_mnist.export(data / folder, source, fashion_mnist.CLASS_NAMES, per_class, skip):
            pass
    return data


def export_set(name: str, work: Path, sizes: dict) -> Path:
    if name == 'fashion_mnist':
        return export_data(work, sizes)
    from bench import datasets
    image_set = datasets.SETS[name]
    datasets.ensure_installed(image_set)
    out = work / f'data-{name}'
    print(datasets.summary(image_set, datasets.export(image_set, out)))
    return out


def weights_file(work: Path) -> Path:
    from components.weights import torchvision as weights
    return Path(weights.import_torchvision(work / 'weights')['no_top'])


def run_plain(data: Path, work: Path, sizes: dict, weights: Path) -> dict:
    out = work / 'plain.json'
    measured = measure.run([sys.executable, '-m', 'bench.plain_keras', str(data), str(out),
                            '--weights', str(weights), '--size', str(sizes['size']),
                            '--epochs', *map(str, sizes['epochs'])], cwd=str(REPO))
    if measured.returncode:
        raise RuntimeError(f'plain script failed:\n{measured.output[-3000:]}')
    result = json.loads(out.read_text())
    result.update(seconds=measured.seconds, peak_rss=measured.peak_rss())
    return result


def run_pipeline(name: str, data: Path, work: Path, sizes: dict, quick: bool, **overrides) -> dict:
    """One local pipeline run in a fresh output folder; figures from its own reports and MLMD."""
    output = work / name
    if output.exists():
        shutil.rmtree(output)
    # No TFLite variants unless asked: the plain script makes none, and they have their own
    # benchmark (bench/tflite_variants.py).
    config = dict(data_root=str(data), output_dir=str(output), pipeline_name=f'bench-{name}', layout='pre_split',
                  weights='imagenet-torchvision', image_size=sizes['size'], min_accuracy=0.0, tflite=[])
    if quick:
        config.update(fine_tune_epochs=sizes['epochs'][1])
    config.update(overrides)
    config_path = work / f'{name}.yaml'
    config_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, KERAS_HOME=str(work / 'keras'))
    measured = measure.run([sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path)],
                           env=env, cwd=str(REPO))
    if measured.returncode:
        raise RuntimeError(f'pipeline {name} failed:\n{measured.output[-3000:]}')
    from pipeline import run_summary
    from pipeline.config import load_config
    summary = run_summary.latest_run(load_config(config_path))
    model_run = Path(summary.model_uri).parent.parent / 'model_run' / Path(summary.model_uri).name
    training = json.loads((model_run / 'training_summary.json').read_text())
    components = {node.node_id: node.seconds for node in summary.nodes}
    return {
        'seconds': measured.seconds,
        'peak_rss': measured.peak_rss(),
        'components': components,
        'phases': training['phase_metrics'],
        'recipe': training.get('recipe'),
        'evaluator_accuracy': summary.accuracy,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--sets', nargs='+', choices=SETS, default=None)
    parser.add_argument('--runs', nargs='+', choices=RUNS, default=list(RUNS))
    parser.add_argument('--work', type=Path, default=REPO / 'bench' / '.work' / 'recipe')
    parser.add_argument('--keep', action='store_true', help='add to the recorded results instead of replacing them')
    parser.add_argument('--repeat', type=int, default=1,
                        help='measure every run this many times, interleaved, and record the median time')
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sets = args.sets or (['fashion_mnist'] if args.quick else list(SETS))
    args.work.mkdir(parents=True, exist_ok=True)
    weights = weights_file(args.work)
    results_file = RESULTS_DIR / ('recipe-quick.json' if args.quick else 'recipe.json')
    results = {'sizes': {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}, 'sets': {}}
    if args.keep and results_file.exists():  # add these runs to the recorded ones
        results = json.loads(results_file.read_text())
    for name in sets:
        data = export_set(name, args.work, sizes)
        runs = results['sets'].setdefault(name, {})
        measured = {}
        for repeat in range(args.repeat):  # interleaved: plain, auto, ..., plain, auto, ...
            for run in args.runs:
                if run in CACHE_RUNS and name != 'fashion_mnist':
                    continue
                result = measure_run(run, name, data, args.work, sizes, args.quick, weights)
                measured.setdefault(run, []).append(result)
                runs[run] = combine_repeats(measured[run])
                runs[run]['commit'] = _commit()
                print(name, run, f'({repeat + 1} of {args.repeat})', json.dumps(result), flush=True)
                results_file.write_text(json.dumps(results, indent=1))
    write_report(results, args.quick)
    return 0


def measure_run(run: str, name: str, data: Path, work: Path, sizes: dict, quick: bool, weights: Path) -> dict:
    if run == 'plain':
        return run_plain(data, work, sizes, weights)
    if run in CACHE_RUNS:
        return run_pipeline(f'{name}-{run}', data, work, sizes, quick, recipe='tutorial',
                            head_epochs=sizes['epochs'][0], augmentation=False, fine_tune_epochs=0,
                            cache_features=run == 'no-aug')
    extra = dict(tuning={}) if run == 'tuning' else {}
    return run_pipeline(f'{name}-{run}', data, work, sizes, quick, **extra)


def combine_repeats(repeats: list) -> dict:
    """The first measurement, with the median whole-run time of all of them and every time.

    Wall times on this shared 2-core machine vary a lot between identical runs (the tutorial
    script on Open Clip Art took 329 s, then 216 s: bench/results/recipe.json at 3d2a7d9), so a
    ratio of two single runs can say more about the machine than about the code; the accuracies
    do not vary (fixed seeds).
    """
    combined = dict(repeats[0])
    times = [r['seconds'] for r in repeats]
    combined['seconds'] = statistics.median(times)
    if len(repeats) > 1:
        combined['repeats'] = [{'seconds': r['seconds'], 'final_test_accuracy': _final_accuracy(r)} for r in repeats]
    return combined


def _final_accuracy(run: dict) -> float:
    if 'fine_tune_test_accuracy' in run:  # the plain script
        return run['fine_tune_test_accuracy']
    phases = run.get('phases', {})
    return phases.get('fine-tuning', phases.get('head', {})).get('test_accuracy')


def write_report(results: dict, quick: bool) -> None:
    sizes = results['sizes']
    rows = []
    for name, runs in results['sets'].items():
        plain = runs.get('plain')
        plain_seconds = plain['seconds'] if plain else float('nan')
        if plain:
            rows.append(_row(name, 'plain tf.keras script (the tutorial)', dict(plain, phases={
                'head': {'test_accuracy': plain['head_test_accuracy'], 'seconds': plain['head_seconds']},
                'fine-tuning': {'test_accuracy': plain['fine_tune_test_accuracy'],
                                'seconds': plain['fine_tune_seconds']}}), plain_seconds, plain))
        for run, label in (('auto', 'pipeline, recipe: auto (the default)'),
                           ('tuning', 'pipeline, recipe: auto + tuning: {}'),
                           ('no-aug', 'pipeline, recipe: tutorial, no augmentation, phase 1 only, features cached'),
                           ('no-aug-raw', 'the same, features not cached')):
            if run in runs:
                rows.append(_row(name, label, runs[run], plain_seconds, plain))
    write_table(
        'recipe-quick' if quick else 'recipe',
        'The pipeline against the plain tutorial script, on three real image sets',
        f'MobileNetV2 at {sizes["size"]} px with imagenet-torchvision weights everywhere; the sets and runs are '
        f'described in bench/recipe.py. Test accuracy on each set\'s test/ folder after each phase (the '
        f'pipeline\'s phase 2 figure is that of the model it keeps); "gain" is the final test accuracy minus '
        f'the plain script\'s, in points; times are wall-clock seconds, "whole run" is the plain script\'s '
        f'process or the whole pipeline (TFX, ingestion, Transform, Evaluator included), "ratio" that over the '
        f'plain script\'s; with --repeat N every run was measured N times, interleaved (plain, auto, plain, auto, '
        f'...), and "whole run" is the median with each time in brackets, "ratio" the ratio of the medians. "kept" says whether phase 2\'s early stopping kept a fine-tuned epoch or the '
        f'head-only model. Per-component times and every choice the recipe made are in recipe.json. '
        f'Runs added later with --keep name their commit in the last column.',
        ['set', 'run', 'test acc. phase 1', 'test acc. final', 'gain (points)', 'phase 1 s', 'phase 2 s',
         'whole run s', 'ratio', 'epochs (1 + 2)', 'kept', 'chosen', 'commit'],
        rows)


def _commit() -> str:
    import subprocess
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                          cwd=REPO).stdout.strip()


def _row(name: str, label: str, run: dict, plain_seconds: float, plain: dict) -> list:
    phases = run.get('phases', {})
    head, tune = phases.get('head', {}), phases.get('fine-tuning', {})
    final = tune.get('test_accuracy', head.get('test_accuracy'))
    gain = '-' if plain is None or run is plain else f'{100 * (final - plain["fine_tune_test_accuracy"]):+.1f}'
    recipe = run.get('recipe') or {}
    chosen = recipe.get('chosen', {})
    kept = '-' if not recipe else ('head only' if recipe.get('kept_head_only_model') else 'fine-tuned')
    epochs = '10 + 10' if run is plain else f'{head.get("epochs", "-")} + {tune.get("epochs", "-")}'
    chosen_text = ', '.join(f'{k} {v:g}' if isinstance(v, float) else f'{k} {v}' for k, v in chosen.items()
                            if k in ('learning_rate', 'dropout', 'head_l2', 'head_epochs'))
    tuned = recipe.get('hyperparameters_from_tuner') or {}
    if tuned:
        chosen_text += '; tuner: ' + ', '.join(f'{k} {v:g}' if isinstance(v, float) else f'{k} {v}'
                                              for k, v in tuned.items())
    return [name, label, f'{head.get("test_accuracy", float("nan")):.4f}', f'{final:.4f}', gain,
            f'{head.get("seconds", 0):.0f}', f'{tune.get("seconds", 0):.0f}', _whole_run(run),
            _ratio(run, plain, plain_seconds), epochs, kept, chosen_text or '-', run.get('commit', '-')]


def _ratio(run: dict, plain: dict, plain_seconds: float) -> str:
    """The run's time over the plain script's, when both were measured in the same run of this
    benchmark (same commit): times from different runs compare the machine's load as much."""
    if plain is not None and run is not plain and run.get('commit') != plain.get('commit'):
        return f'- (plain script not run at {run.get("commit")})'
    return f'{run["seconds"] / plain_seconds:.2f}'


def _whole_run(run: dict) -> str:
    """The whole run's time; for repeated runs their median and, in brackets, each."""
    if not run.get('repeats'):
        return f'{run["seconds"]:.0f}'
    each = ' / '.join(f'{r["seconds"]:.0f}' for r in run['repeats'])
    return f'{run["seconds"]:.0f} ({each})'


if __name__ == '__main__':
    raise SystemExit(main())
