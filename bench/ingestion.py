"""How fast does ImageExampleGen ingest, and does its memory stay flat as the folder grows?

    python -m bench.ingestion [--files 1000 10000 ...] [--classes 10] [--size 48]

For each size, writes a folder of small generated images (10 classes, a tenth of the files in
nested sub-folders, one .DS_Store per class) with the mix a real folder has, per 100 files:
45 JPEG, 44 PNG, 1 BMP (passed as they are), 4 WebP and 2 EXIF-rotated JPEGs (converted),
1 byte-identical copy of the file before, which is in another class (a reported duplicate),
1 truncated JPEG, 1 empty file and 1 text file named .jpg (skipped). Then runs the executor in a fresh process,
exactly as TFX runs it with the pipeline's default Beam flags (DirectRunner, in memory),
plus the driver's tree fingerprint, and measures:

- wall time of the executor (listing, reading, checking, converting, splitting, writing,
  report) and files/s = files found under data_root / that time;
- the process's resident memory after imports and its peak (ru_maxrss): if the files
  stream through Beam, the peak does not grow with the number of files.

Writes bench/results/ingestion.md.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / 'results' / 'ingestion.md'
REPO = Path(__file__).resolve().parent.parent


# What each of 100 consecutive files is (see the module docstring).
_MIX = ['jpeg'] * 45 + ['png'] * 44 + ['bmp'] + ['webp'] * 4 + ['rotated'] * 2 + ['copy', 'truncated', 'empty', 'text']
_FORMATS = {'jpeg': ('JPEG', '.jpg'), 'png': ('PNG', '.png'), 'bmp': ('BMP', '.bmp'), 'webp': ('WEBP', '.webp'),
            'rotated': ('JPEG', '.jpg'), 'truncated': ('JPEG', '.jpg'), 'empty': ('PNG', '.png'),
            'text': ('PNG', '.jpg')}


def write_corpus(root: Path, files: int, classes: int, size: int) -> None:
    """`files` entries under root/<class>/..., mixed as _MIX says; deterministic."""
    from PIL import Image
    assert len(_MIX) == 100
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 220, (classes, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    previous = (b'', '.png')
    for index in range(files - classes):  # one .DS_Store per class completes the count
        label, kind = index % classes, _MIX[index % 100]
        folder = root / f'class_{label:02d}' / (f'batch_{index % 7}' if index % 10 == 0 else '')
        folder.mkdir(parents=True, exist_ok=True)
        if kind == 'copy':
            data, extension = previous  # the file before, which is in another class
        else:
            pixels = np.clip(colours[label] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            image_format, extension = _FORMATS[kind]
            buffer = io.BytesIO()
            options = {'quality': 90} if image_format in ('JPEG', 'WEBP') else {}
            Image.fromarray(pixels).save(buffer, format=image_format,
                                         **(dict(options, exif=exif) if kind == 'rotated' else options))
            data = {'truncated': buffer.getvalue()[:len(buffer.getvalue()) // 2], 'empty': b'',
                    'text': b'not an image at all'}.get(kind, buffer.getvalue())
        (folder / f'{index:06d}{extension}').write_bytes(data)
        previous = (data, extension)
    for label in range(classes):
        (root / f'class_{label:02d}' / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')


def _resident_mb() -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def measure(data_root: str, out_dir: str) -> dict:
    """In this (fresh) process: the executor as TFX runs it, and the driver's fingerprint."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts

    from components.example_gen.component import ImageExampleGen
    from components.example_gen.executor import REPORT_FILE, Executor
    from components.example_gen.ingestion.fingerprint import tree_fingerprint
    from pipeline.config import IngestionConfig, PipelineConfig
    from pipeline.tfx_pipeline import effective_beam_args

    beam_args = effective_beam_args(PipelineConfig.model_fields['beam_args'].get_default(call_default_factory=True))
    flags = list(beam_args)  # TFX appends its labels to the list it is given
    component = ImageExampleGen(data_root, IngestionConfig())
    exec_properties = {key: value for key, value in component.exec_properties.items() if value is not None}
    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    baseline = _resident_mb()

    started = time.perf_counter()
    tree_fingerprint(data_root)
    fingerprint_seconds = time.perf_counter() - started
    started = time.perf_counter()
    Executor(BaseBeamExecutor.Context(beam_pipeline_args=beam_args)).Do({}, {'examples': [examples]}, exec_properties)
    seconds = time.perf_counter() - started

    report = json.loads(Path(out_dir, REPORT_FILE).read_text())
    return dict(seconds=seconds, fingerprint_seconds=fingerprint_seconds, beam_args=flags,
                baseline_mb=baseline, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                ingested=report['total'], skipped=len(report['skipped']), converted=len(report['converted']),
                duplicates=len(report['duplicates']))


def _run_in_fresh_process(data_root: Path, out_dir: Path) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-m', 'bench.ingestion', '--measure', str(data_root), str(out_dir)],
                            cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f'measurement failed:\n{result.stderr[-5000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--files', type=int, nargs='+', default=[1000, 10000])
    parser.add_argument('--classes', type=int, default=10)
    parser.add_argument('--size', type=int, default=48, help='image width and height in pixels')
    parser.add_argument('--measure', nargs=2, metavar=('DATA_ROOT', 'OUT_DIR'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
        print(json.dumps(measure(*args.measure)))
        return 0

    rows = []
    for files in args.files:
        work = Path(tempfile.mkdtemp(prefix='bench-ingestion-'))
        try:
            started = time.perf_counter()
            write_corpus(work / 'images', files, args.classes, args.size)
            corpus_mb = sum(p.stat().st_size for p in (work / 'images').rglob('*') if p.is_file()) / 2 ** 20
            print(f'{files} files ({corpus_mb:.0f} MB) written in {time.perf_counter() - started:.0f} s; ingesting')
            result = _run_in_fresh_process(work / 'images', work / 'out')
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result.update(files=files, corpus_mb=corpus_mb)
        rows.append(result)
        print(f'{files} files: {result["seconds"]:.1f} s, {files / result["seconds"]:.0f} files/s, '
              f'memory {result["baseline_mb"]:.0f} MB after imports, peak {result["peak_mb"]:.0f} MB')

    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    lines = [
        '# Ingestion: throughput and peak memory of ImageExampleGen',
        '',
        f'`python -m bench.ingestion --files {" ".join(map(str, args.files))} --classes {args.classes} '
        f'--size {args.size}` on {datetime.date.today()}, commit {commit}, {platform.machine()}, '
        f'{os.cpu_count()} CPU cores (shared with other work), Beam flags `{" ".join(rows[0]["beam_args"])}`. '
        f'{args.size}x{args.size} px images in {args.classes} classes; the mix of files is in the docstring '
        f'of bench/ingestion.py. Each size runs in a fresh process; memory is resident set size.',
        '',
        '| files | corpus | ingested | skipped | converted | duplicate groups | executor | files/s '
        '| tree fingerprint | memory after imports | peak memory |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ] + [f'| {r["files"]:,} | {r["corpus_mb"]:.0f} MB | {r["ingested"]:,} | {r["skipped"]:,} | {r["converted"]:,} '
         f'| {r["duplicates"]:,} | {r["seconds"]:.1f} s | {r["files"] / r["seconds"]:.0f} '
         f'| {r["fingerprint_seconds"]:.2f} s | {r["baseline_mb"]:.0f} MB | {r["peak_mb"]:.0f} MB |' for r in rows]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text('\n'.join(lines) + '\n')
    print(f'wrote {RESULTS}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
