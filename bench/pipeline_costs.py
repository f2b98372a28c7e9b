"""What the pipeline itself costs: Transform memory and storage, the Evaluator, serving, leaks.

    python -m bench.pipeline_costs [--quick] [--work DIR]

1. Transform: peak memory of the pipeline process while Transform runs, and the bytes it
   writes, with 2,000 and 10,000 Fashion-MNIST images (a small, fast model: the training
   part is not measured here).
2. Evaluator: time and peak memory with a baseline model (the second run of the same
   pipeline), with the DirectRunner in one process (the default) and in multi-processing
   mode over all cores.
3. Serving: p50/p99 latency of one image through the pushed SavedModel's raw-bytes signature,
   and throughput at batch 32 (the 160 px MobileNetV2 of bench/recipe.py if it was run).
4. Leaks: bytes left in TMPDIR and HOME, both empty folders made for each run.

Writes bench/results/pipeline_costs.md and .json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import yaml

from bench import measure
from bench.report import RESULTS_DIR, write_table

REPO = Path(__file__).resolve().parent.parent


def component_windows(config) -> Dict[str, Tuple[float, float]]:
    """Node id -> (start, end) unix times of the latest run, from ML Metadata."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(config.metadata_path))
    run = max(store.get_contexts_by_type('pipeline_run'), key=lambda c: c.create_time_since_epoch)
    in_run = {e.id for e in store.get_executions_by_context(run.id)}
    windows = {}
    for node in store.get_contexts_by_type('node'):
        for execution in store.get_executions_by_context(node.id):
            if execution.id in in_run:
                windows[node.name.split('.', 1)[1]] = (execution.create_time_since_epoch / 1000,
                                                       execution.last_update_time_since_epoch / 1000)
    return windows


def run_pipeline(work: Path, name: str, data: Path, **overrides):
    """A run with HOME and TMPDIR pointing at new empty folders, memory sampled throughout."""
    from pipeline.config import load_config
    config_path = work / f'{name}.yaml'
    values = dict(data_root=str(data), output_dir=str(work / name), pipeline_name=f'costs-{name}',
                  weights='none', alpha=0.35, image_size=96, head_epochs=1, fine_tune_epochs=0,
                  min_accuracy=0.0, split_ratios={'train': 60, 'eval': 20, 'test': 20},
                  drop_unusable_classes=True)  # costs, not accuracy: a class short of test images may go
    values.update(overrides)
    config_path.write_text(yaml.safe_dump(values))
    home, tmp = Path(tempfile.mkdtemp(prefix='home-', dir=work)), Path(tempfile.mkdtemp(prefix='tmp-', dir=work))
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp))
    for variable in ('KERAS_HOME', 'MPLCONFIGDIR'):
        env.pop(variable, None)
    measured = measure.run([sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path)],
                           env=env, cwd=str(REPO))
    if measured.returncode:
        raise RuntimeError(f'{name} failed:\n{measured.output[-3000:]}')
    config = load_config(config_path)
    leaks = {'home': measure.folder_bytes(str(home)), 'tmp': measure.folder_bytes(str(tmp)),
             'home_files': sorted(str(p.relative_to(home)) for p in home.rglob('*') if p.is_file()),
             'tmp_files': sorted(str(p.relative_to(tmp)) for p in tmp.rglob('*') if p.is_file())}
    return config, measured, component_windows(config), leaks


def _artifact_bytes(config, component: str, output: str) -> int:
    folder = Path(config.pipeline_root) / component / output
    latest = max(folder.iterdir(), key=lambda p: int(p.name))
    return measure.folder_bytes(str(latest))


def serving_figures(model_dir: Path, quick: bool) -> dict:
    import components  # noqa: F401
    import tensorflow as tf
    from PIL import Image
    serve = tf.saved_model.load(str(model_dir)).signatures['serving_default']
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8), 'L').save(buffer, 'PNG')
    one = tf.constant([buffer.getvalue()])
    for _ in range(5):
        serve(image_bytes=one)
    latencies = []
    for _ in range(50 if quick else 300):
        started = time.perf_counter()
        serve(image_bytes=one)['probabilities'].numpy()
        latencies.append(time.perf_counter() - started)
    batch = tf.constant([buffer.getvalue()] * 32)
    serve(image_bytes=batch)
    rounds = 5 if quick else 20
    started = time.perf_counter()
    for _ in range(rounds):
        serve(image_bytes=batch)['probabilities'].numpy()
    return {'p50_ms': 1000 * float(np.percentile(latencies, 50)), 'p99_ms': 1000 * float(np.percentile(latencies, 99)),
            'batch32_images_per_second': 32 * rounds / (time.perf_counter() - started)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--work', type=Path, default=REPO / 'bench' / '.work' / 'costs')
    args = parser.parse_args(argv)
    from pipeline import fashion_mnist
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    sizes = (200, 1000) if not args.quick else (40, 120)
    results: Dict[str, dict] = {'transform': {}, 'leaks': {}}
    first_config = None
    for per_class in sizes:
        data = args.work / f'data-{per_class}'
        for _ in fashion_mnist.export(data, 'train', fashion_mnist.CLASS_NAMES, per_class):
            pass
        config, measured, windows, leaks = run_pipeline(args.work, f'images-{10 * per_class}', data)
        start, end = windows['Transform']
        results['transform'][10 * per_class] = {
            'seconds': end - start, 'peak_rss': measured.peak_rss(start, end),
            'graph_bytes': _artifact_bytes(config, 'Transform', 'transform_graph'),
            'examples_bytes': _artifact_bytes(config, 'ImageExampleGen', 'examples'),
            'run_peak_rss': measured.peak_rss(), 'run_seconds': measured.seconds}
        results['leaks'][f'images-{10 * per_class}'] = leaks
        first_config = first_config or (config, data)
        print(json.dumps(results['transform'][10 * per_class]))

    config, data = first_config
    results['evaluator'] = {}
    for mode, beam_args in (('in_memory', ['--direct_running_mode=in_memory']),
                            ('multi_processing', ['--direct_running_mode=multi_processing', '--direct_num_workers=0'])):
        # Same pipeline name and output: the Evaluator compares with the model blessed before.
        _, measured, windows, leaks = run_pipeline(args.work, f'images-{10 * sizes[0]}', data, beam_args=beam_args)
        start, end = windows['Evaluator']
        results['evaluator'][mode] = {'seconds': end - start, 'peak_rss': measured.peak_rss(start, end)}
        results['leaks'][f'rerun-{mode}'] = leaks
        print(mode, json.dumps(results['evaluator'][mode]))

    recipe_serving = REPO / 'bench' / '.work' / 'recipe' / 'fashion_mnist-auto' / 'serving'
    serving_dir = recipe_serving if recipe_serving.exists() else Path(config.serving_dir)
    from pipeline.predict import resolve_model_dir
    model_dir = resolve_model_dir(str(serving_dir))
    results['serving'] = dict(serving_figures(model_dir, args.quick), model=str(model_dir))
    print(json.dumps(results['serving']))
    (RESULTS_DIR / ('pipeline_costs-quick.json' if args.quick else 'pipeline_costs.json')).write_text(
        json.dumps(results, indent=1))
    write_report(results, args.quick)
    return 0


def write_report(results: dict, quick: bool) -> None:
    gib = 2 ** 30
    rows = []
    for images, t in results['transform'].items():
        rows.append([f'Transform, {images} images', f'{t["seconds"]:.1f} s', f'{t["peak_rss"] / gib:.2f} GiB',
                     f'transform graph {t["graph_bytes"] / 1e6:.2f} MB (examples {t["examples_bytes"] / 1e6:.1f} MB)'])
    for mode, e in results['evaluator'].items():
        rows.append([f'Evaluator with a baseline, DirectRunner {mode}', f'{e["seconds"]:.1f} s',
                     f'{e["peak_rss"] / gib:.2f} GiB', ''])
    s = results['serving']
    rows.append(['Serving, one image (raw bytes)', f'p50 {s["p50_ms"]:.1f} ms, p99 {s["p99_ms"]:.1f} ms', '',
                 Path(s['model']).name])
    rows.append(['Serving, batch of 32', f'{s["batch32_images_per_second"]:.0f} images/s', '', ''])
    for run, leak in results['leaks'].items():
        rows.append([f'Leaks after run {run}', f'TMPDIR {leak["tmp"]} bytes, HOME {leak["home"]} bytes', '',
                     ', '.join(leak['home_files'] + leak['tmp_files'])[:200]])
    write_table('pipeline_costs-quick' if quick else 'pipeline_costs', 'What the pipeline itself costs',
                'Peak RSS is the pipeline process with its children, sampled every 0.2 s, within the '
                'component\'s window from ML Metadata. Training: MobileNetV2 alpha 0.35 at 96 px, 1 epoch, '
                'random weights (not measured here).', ['what', 'time', 'peak memory', 'notes'], rows)


if __name__ == '__main__':
    raise SystemExit(main())
