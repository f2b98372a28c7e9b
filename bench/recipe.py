"""The pipeline against the plain tutorial script, on the same real data, in the same run.

    python -m bench.recipe [--quick] [--work DIR]

Data: Fashion-MNIST from Debian's `dataset-fashion-mnist`, exported as pre-split folders:
train/ 200 images per class (2,000), validation/ 50 per class (500), both from its training
set, and test/ 100 per class (1,000) from its test set; 10 classes, resized to 160 px.
Both sides use MobileNetV2 with the torchvision-converted ImageNet weights and the tutorial's
recipe (10 epochs with the base frozen, Adam 1e-4; 10 more from layer 100, RMSprop 1e-5).

Runs, one after another on an otherwise idle machine:
  plain        bench/plain_keras.py: image_dataset_from_directory, the tutorial's code
  pipeline     python -m pipeline.local_runner, all defaults but data and weights
  tuned        the pipeline with a 10x higher head learning rate (1e-3): the frozen phase
               under-trains with 1e-4 on 10 classes in 10 epochs
  no-aug       the pipeline without augmentation, phase 1 only, backbone features cached
  no-aug-raw   the same without the feature cache (to compare the frozen phase's time)

--quick: 20 / 10 / 20 images per class, 96 px, 2 + 2 epochs (minutes, for a smoke test).
Writes bench/results/recipe.md and recipe.json (read by bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from bench import measure
from bench.report import RESULTS_DIR, write_table

REPO = Path(__file__).resolve().parent.parent
FULL = dict(train=200, validation=50, test=100, size=160, epochs=(10, 10))
QUICK = dict(train=20, validation=10, test=20, size=96, epochs=(2, 2))


def export_data(work: Path, sizes: dict) -> Path:
    """Pre-split folders written by pipeline.fashion_mnist (the same code as the sample data)."""
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


def run_pipeline(name: str, data: Path, work: Path, sizes: dict, **overrides) -> dict:
    """One local pipeline run in a fresh output folder; figures from its own reports and MLMD."""
    output = work / name
    if output.exists():
        shutil.rmtree(output)
    config = dict(data_root=str(data), output_dir=str(output), pipeline_name=f'bench-{name}', layout='pre_split',
                  weights='imagenet-torchvision', image_size=sizes['size'], head_epochs=sizes['epochs'][0],
                  fine_tune_epochs=sizes['epochs'][1], min_accuracy=0.0)
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
        'evaluator_accuracy': summary.accuracy,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--work', type=Path, default=REPO / 'bench' / '.work' / 'recipe')
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.work.mkdir(parents=True, exist_ok=True)
    data = export_data(args.work, sizes)
    weights = weights_file(args.work)

    results = {'sizes': {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}}
    results['plain'] = run_plain(data, args.work, sizes, weights)
    print('plain', json.dumps(results['plain']))
    results['pipeline'] = run_pipeline('pipeline', data, args.work, sizes)
    print('pipeline', json.dumps(results['pipeline']))
    results['tuned'] = run_pipeline('tuned', data, args.work, sizes, learning_rate=1e-3, fine_tune_learning_rate=1e-5)
    print('tuned', json.dumps(results['tuned']))
    for name, cached in (('no-aug', True), ('no-aug-raw', False)):
        results[name] = run_pipeline(name, data, args.work, sizes, augmentation=False, fine_tune_epochs=0,
                                     cache_features=cached)
        print(name, json.dumps(results[name]))
    (RESULTS_DIR / ('recipe-quick.json' if args.quick else 'recipe.json')).write_text(json.dumps(results, indent=1))
    write_report(results, args.quick)
    return 0


def _row(name: str, run: dict, plain_seconds: float) -> list:
    phases = run.get('phases', {})
    head, tune = phases.get('head', {}), phases.get('fine-tuning', {})

    def accuracy(phase):
        return f'{phase["test_accuracy"]:.4f}' if 'test_accuracy' in phase else '-'

    def rate(phase):
        return f'{phase["images_per_second"]:.0f}' if 'images_per_second' in phase else '-'

    def seconds(phase):
        return f'{phase["seconds"]:.0f}' if 'seconds' in phase else '-'

    return [name, accuracy(head), accuracy(tune), seconds(head), rate(head), seconds(tune), rate(tune),
            f'{run["seconds"]:.0f}', f'{run["seconds"] / plain_seconds:.2f}', f'{run["peak_rss"] / 2 ** 30:.1f}']


def write_report(results: dict, quick: bool) -> None:
    plain = results['plain']
    train_images = 10 * results['sizes']['train']
    epochs = results['sizes']['epochs']
    plain_phases = {
        'head': {'test_accuracy': plain['head_test_accuracy'], 'seconds': plain['head_seconds'],
                 'images_per_second': train_images * epochs[0] / plain['head_seconds']},
        'fine-tuning': {'test_accuracy': plain['fine_tune_test_accuracy'], 'seconds': plain['fine_tune_seconds'],
                        'images_per_second': train_images * epochs[1] / plain['fine_tune_seconds']},
    }
    rows = [_row('plain tf.keras script', dict(plain, phases=plain_phases), plain['seconds'])]
    for name, label in (('pipeline', 'pipeline, defaults'), ('tuned', 'pipeline, head lr 1e-3'),
                        ('no-aug', 'pipeline, no augmentation, features cached (phase 1 only)'),
                        ('no-aug-raw', 'pipeline, no augmentation, not cached (phase 1 only)')):
        rows.append(_row(label, results[name], plain['seconds']))
    sizes = results['sizes']
    write_table(
        'recipe-quick' if quick else 'recipe',
        'The pipeline against the plain tutorial script',
        f'Fashion-MNIST, 10 classes, {10 * sizes["train"]} training, {10 * sizes["validation"]} validation and '
        f'{10 * sizes["test"]} test images, {sizes["size"]} px, MobileNetV2 with imagenet-torchvision weights, '
        f'{epochs[0]} + {epochs[1]} epochs. Times are wall-clock seconds; a phase\'s images/s count training '
        f'images over the phase\'s time (validation included). "whole run" is the plain script process or the '
        f'whole pipeline, TFX included; "ratio" is that time over the plain script\'s. Per-component times '
        f'are in recipe.json.',
        ['run', 'test acc. after phase 1', 'test acc. after phase 2', 'phase 1 s', 'phase 1 img/s',
         'phase 2 s', 'phase 2 img/s', 'whole run s', 'ratio to plain', 'peak RSS GiB'],
        rows)


if __name__ == '__main__':
    raise SystemExit(main())
