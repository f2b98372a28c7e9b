"""The Beam components on Flink against the DirectRunner: wall time, peak memory, where time goes.

    python -m bench.flink_runner [--images 20000] [--quick] [--work DIR]

Generates small images (4 classes, 32x32 PNG of noisy colours) and runs the pipeline on them
(MobileNetV2 alpha 0.35 at 32 px, random weights, one head epoch: the Beam components are
what is measured) once per runner:

- DirectRunner in_memory (the default) and multi_processing (one worker process per core);
- Flink with 1 and with 2 TaskManagers (one slot each) started here by `python -m pipeline.flink`,
  SDK workers started by each TaskManager (PROCESS), and 1 TaskManager with Beam's worker pool
  (EXTERNAL; pipeline/flink/cluster.py says why not 2).

For each: seconds of each Beam component (ML Metadata's execution times), peak resident memory
of the command's whole process tree during them (the JVMs and SDK workers included), and for
Flink the cluster's start-up and the seconds the Flink jobs themselves ran: the rest of a
component's time is TFX and Beam outside the cluster (building and staging the pipeline,
submitting it, the executor's own work before and after).

Writes bench/results/flink_runner.md and .json (--quick: 400 images, flink_runner-quick.*).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from bench import measure
from bench.pipeline_costs import component_windows
from bench.report import RESULTS_DIR, write_table

REPO = Path(__file__).resolve().parent.parent
BEAM_COMPONENTS = ('ImageExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')
CLASSES = {'red': (200, 60, 40), 'green': (40, 160, 60), 'blue': (50, 70, 210), 'grey': (128, 128, 128)}
RUNNERS = {
    'DirectRunner in_memory': ['pipeline.local_runner', '--set', 'beam_args=[--direct_running_mode=in_memory]'],
    'DirectRunner multi_processing': ['pipeline.local_runner', '--set',
                                      'beam_args=[--direct_running_mode=multi_processing, --direct_num_workers=0]'],
    'Flink, 1 TaskManager': ['pipeline.flink', '--task-managers', '1'],
    'Flink, 2 TaskManagers': ['pipeline.flink', '--task-managers', '2'],
    'Flink, 1 TaskManager, EXTERNAL worker pool': ['pipeline.flink', '--task-managers', '1', '--harness', 'external'],
}


def make_images(root: Path, count: int) -> Path:
    """count 32x32 PNGs, evenly over CLASSES, each a different noisy picture."""
    from PIL import Image
    rng = np.random.default_rng(0)
    names = list(CLASSES)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name = names[index % len(names)]
        pixels = np.clip(np.array(CLASSES[name]) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, 'RGB').save(buffer, format='PNG')
        (root / name / f'{index:06d}.png').write_bytes(buffer.getvalue())
    return root


def run(work: Path, label: str, command, data: Path) -> dict:
    from pipeline.config import load_config
    slug = label.lower().replace(',', '').replace(' ', '-')
    config_path = work / f'{slug}.yaml'
    config_path.write_text(yaml.safe_dump(dict(
        data_root=str(data), output_dir=str(work / slug), pipeline_name=f'flink-bench-{slug}', weights='none',
        alpha=0.35, image_size=32, head_epochs=1, fine_tune_epochs=0, min_accuracy=0.0, tflite=[],
        enable_cache=False, split_ratios={'train': 60, 'eval': 20, 'test': 20})))
    home, tmp = Path(tempfile.mkdtemp(prefix='home-', dir=work)), Path(tempfile.mkdtemp(prefix='tmp-', dir=work))
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), IMAGE_TL_CACHE=os.environ.get('IMAGE_TL_CACHE') or str(
        Path.home() / '.cache' / 'image-transfer-learning'))
    for variable in ('KERAS_HOME', 'MPLCONFIGDIR', 'PIPELINE_CONFIG'):
        env.pop(variable, None)
    measured = measure.run([sys.executable, '-m', *command, '--config', str(config_path)], env=env, cwd=str(REPO))
    if measured.returncode:
        raise RuntimeError(f'{label} failed:\n{measured.output[-4000:]}')
    windows = component_windows(load_config(config_path))
    start = min(windows[c][0] for c in BEAM_COMPONENTS)
    end = max(windows[c][1] for c in BEAM_COMPONENTS)
    result = {'command': command, 'wall_seconds': measured.seconds,
              'components': {c: windows[c][1] - windows[c][0] for c in BEAM_COMPONENTS},
              'beam_seconds': sum(windows[c][1] - windows[c][0] for c in BEAM_COMPONENTS),
              'peak_rss': measured.peak_rss(start, end), 'run_peak_rss': measured.peak_rss()}
    jobs_file = work / slug / 'flink' / 'jobs.json'
    if jobs_file.exists():
        record = json.loads(jobs_file.read_text())
        result['flink'] = {'startup_seconds': record['startup_seconds'], 'jobs': record['jobs'],
                           'job_seconds': sum(job['seconds'] for job in record['jobs']),
                           # Seconds the Flink jobs ran within each component's execution.
                           'job_seconds_by_component': {
                               c: sum(job['seconds'] for job in record['jobs']
                                      if windows[c][0] <= job['start_time'] <= windows[c][1])
                               for c in BEAM_COMPONENTS}}
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print(label, json.dumps({k: v for k, v in result.items() if k != 'flink'}), flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=None, help='default 20,000 (--quick: 400)')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--only', nargs='+', choices=list(RUNNERS), default=list(RUNNERS))
    parser.add_argument('--work', type=Path, default=REPO / 'bench' / '.work' / 'flink_runner')
    args = parser.parse_args(argv)
    args.images = args.images or (400 if args.quick else 20000)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    data = make_images(args.work / 'images', args.images)
    results = {'images': args.images, 'runs': {label: run(args.work, label, RUNNERS[label], data)
                                               for label in args.only}}
    name = 'flink_runner-quick' if args.quick else 'flink_runner'
    (RESULTS_DIR / f'{name}.json').write_text(json.dumps(results, indent=1))
    write_report(results, name)
    return 0


def write_report(results: dict, name: str) -> None:
    gib = 2 ** 30
    rows = []
    for label, r in results['runs'].items():
        c, flink = r['components'], r.get('flink')

        def cell(component):
            if not flink:
                return f'{c[component]:.0f}'
            return f'{c[component]:.0f} ({flink["job_seconds_by_component"][component]:.0f})'
        where = (f'cluster start {flink["startup_seconds"]:.0f} s; {len(flink["jobs"])} Flink jobs ran '
                 f'{flink["job_seconds"]:.0f} s of the components\' {r["beam_seconds"]:.0f} s' if flink else '')
        rows.append([label, *(cell(name) for name in BEAM_COMPONENTS), f'{r["beam_seconds"]:.0f}',
                     f'{r["wall_seconds"]:.0f}', f'{r["peak_rss"] / gib:.2f}', where])
    write_table(name, 'Beam runners: the four Beam components on Flink and on the DirectRunner',
                f'{results["images"]:,} generated 32x32 PNG images, 4 classes; MobileNetV2 alpha 0.35 at 32 px, random '
                'weights, one head epoch (the Trainer is not a Beam component and is left out of the components\' '
                'seconds). Seconds per component from ML Metadata, for Flink with the seconds its Flink jobs ran '
                'in brackets (the rest is the pipeline process: TFX\'s executor, building and submitting the Beam job); wall: the whole command (Flink: including '
                'starting and stopping the cluster); peak memory: resident memory of the command\'s process tree '
                '(JVMs and SDK workers included) while the Beam components ran, sampled every 0.2 s.',
                ['runner', *BEAM_COMPONENTS, 'four components (s)', 'wall (s)', 'peak memory (GiB)', 'where the time goes'],
                rows)


if __name__ == '__main__':
    raise SystemExit(main())
