"""Transparency and aspect ratio: which preprocessing do frozen features like? A linear probe per choice.

    python -m bench.preprocessing_choices DATA [--size 160] [--name NAME]

DATA is a pre-split image folder, DATA/{train,validation,test}/<class>/<images> (`val` or
`eval` also name the validation split). Every file goes through ingestion's inspection
(components/example_gen/ingestion/inspection.py, as ImageExampleGen reads it), then is decoded
in one of three ways:

- alpha dropped: the pipeline's old decode, tf.io.decode_image(channels=3): whatever RGB lies
  under transparent pixels is shown (and TensorFlow paints a transparent GIF's pixels black);
- composited on white, composited on black: image_decoding.decode_rgb, Transform's decode;

and made square in one of three ways, image_decoding.to_square: squash, pad (bands of the
background colour; white for alpha dropped) or crop. Each variant's images are scaled as
Transform scales them for MobileNetV2, passed once through the frozen MobileNetV2 (alpha 1.0,
weights imagenet-torchvision) without its top and average-pooled; a logistic regression on
standardised features (as bench/linear_probe.py) is trained on the training split and scored
on the validation and test splits.

Results are kept per data set (NAME, by default the folder's name) in
bench/results/preprocessing_choices.json; bench/results/preprocessing_choices.md shows every
data set measured so far.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras

from bench.report import RESULTS_DIR, write_table
from components.example_gen.ingestion.inspection import Ingested, inspect
from components.trainer import backbones
from components.trainer.spec import BackboneSpec
from components.transform.image_decoding import RESIZE_MODES, decode_pixels, decode_rgb, to_square

SPLITS = {'train': ('train',), 'validation': ('validation', 'val', 'eval'), 'test': ('test',)}
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
# Decode variant -> background (None: the old decode, alpha dropped; pad's bands then white).
DECODES = {'alpha dropped (old decode)': None, 'composited on white': WHITE, 'composited on black': BLACK}
MAX_PIXELS = 100_000_000  # the pipeline's default max_image_pixels
RESULTS_JSON = RESULTS_DIR / 'preprocessing_choices.json'


def split_folder(data: Path, split: str) -> Path:
    for name in SPLITS[split]:
        if (data / name).is_dir():
            return data / name
    raise SystemExit(f'{data} has no {" or ".join(SPLITS[split])} folder (expected DATA/<split>/<class>/...)')


def read_split(folder: Path, classes: List[str]) -> Tuple[List[bytes], np.ndarray, int]:
    """Every image as ingestion would write it, its label, and how many files it refused."""
    encoded, labels, refused = [], [], 0
    for label, name in enumerate(classes):
        for path in sorted(p for p in (folder / name).rglob('*') if p.is_file() and not p.name.startswith('.')):
            outcome = inspect(path.read_bytes(), MAX_PIXELS, apply_exif_orientation=True)
            if isinstance(outcome, Ingested):
                encoded.append(outcome.encoded)
                labels.append(label)
            else:
                refused += 1
    return encoded, np.array(labels), refused


def has_transparency(encoded: bytes) -> bool:
    pixels = decode_pixels(encoded)
    channels = int(pixels.shape[-1])
    return channels in (2, 4) and not encoded.startswith(b'BM') and int(tf.reduce_min(pixels[..., -1])) < 255


def squares(encoded: List[bytes], size: int, background) -> Dict[str, np.ndarray]:
    """resize mode -> float32 [N, size, size, 3] in [0, 255], each image decoded once."""
    out = {mode: np.empty((len(encoded), size, size, 3), np.float32) for mode in RESIZE_MODES}
    for index, data in enumerate(encoded):
        if background is None:
            rgb = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8), tf.float32)
        else:
            rgb = decode_rgb(data, background)
        for mode in RESIZE_MODES:
            out[mode][index] = to_square(rgb, size, mode, background or WHITE).numpy()
    return out


def variant_features(base, encoded: List[bytes], size: int, background, chunk: int = 100) -> Dict[str, np.ndarray]:
    """resize mode -> GAP features [N, 1280], decoded and squared a chunk at a time (memory stays small)."""
    out = {mode: [] for mode in RESIZE_MODES}
    for start in range(0, len(encoded), chunk):
        for mode, images in squares(encoded[start:start + chunk], size, background).items():
            out[mode].append(features(base, images))
    return {mode: np.concatenate(parts) for mode, parts in out.items()}


def features(base, images: np.ndarray, batch: int = 50) -> np.ndarray:
    preprocess = backbones.get('mobilenet_v2').preprocess
    pooled = tf_keras.layers.GlobalAveragePooling2D()
    return np.concatenate([pooled(base(preprocess(tf.constant(images[i:i + batch])), training=False)).numpy()
                           for i in range(0, len(images), batch)])


def probe(train_f, train_y, scored: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler().fit(train_f)
    classifier = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(train_f), train_y)
    return {split: float(classifier.score(scaler.transform(f), y)) for split, (f, y) in scored.items()}


def measure(data: Path, size: int) -> dict:
    train_folder = split_folder(data, 'train')
    classes = sorted(p.name for p in train_folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
    splits = {split: read_split(split_folder(data, split), classes) for split in SPLITS}
    every = [encoded for split in splits.values() for encoded in split[0]]
    transparent = sum(has_transparency(encoded) for encoded in every)
    print(f'{data}: {len(classes)} classes, ' + ', '.join(f'{s} {len(v[0])}' for s, v in splits.items()) +
          f'; {transparent} of {len(every)} images with transparent pixels')
    tf_keras.utils.set_random_seed(0)
    base = backbones.build_base(BackboneSpec(name='mobilenet_v2', image_size=size, alpha=1.0,
                                             weights='imagenet-torchvision'))
    rows = []
    for decode, background in DECODES.items():
        started = time.time()
        per_split = {split: variant_features(base, encoded, size, background)
                     for split, (encoded, _, _) in splits.items()}
        for mode in RESIZE_MODES:
            f = {split: per_split[split][mode] for split in SPLITS}
            scores = probe(f['train'], splits['train'][1],
                           {split: (f[split], splits[split][1]) for split in ('validation', 'test')})
            rows.append(dict(decode=decode, resize=mode, **scores))
            print(f'{decode}, {mode}: validation {scores["validation"]:.4f}, test {scores["test"]:.4f}')
        print(f'  ({time.time() - started:.0f} s)')
    return dict(
        data=str(data), size=size, classes=len(classes), date=str(datetime.date.today()), commit=_commit(),
        command='python -m bench.preprocessing_choices ' + ' '.join(sys.argv[1:]),
        images={split: len(v[0]) for split, v in splits.items()}, refused=sum(v[2] for v in splits.values()),
        transparent=transparent, rows=rows)


def _commit() -> str:
    def git(*args):
        return subprocess.run(['git', *args], capture_output=True, text=True, cwd=RESULTS_DIR.parent).stdout.strip()
    commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
    return commit + (' with uncommitted changes' if git('status', '--porcelain', '--untracked-files=no') else '')


def write_results(name: str, result: dict) -> None:
    stored = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    stored[name] = result
    RESULTS_DIR.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(stored, indent=1) + '\n')
    sets = []
    for set_name, r in sorted(stored.items()):
        n = r['images']
        # One standard error of an accuracy near 0.8 on the test split: differences below
        # about two of these are noise.
        error = math.sqrt(0.8 * 0.2 / n['test'])
        sets.append(f'**{set_name}**: `{r["command"]}` on {r["date"]}, commit {r["commit"]}; {r["classes"]} classes, '
                    f'{n["train"]} training, {n["validation"]} validation and {n["test"]} test images '
                    f'({r["refused"]} files refused by ingestion), {r["transparent"]} of '
                    f'{sum(n.values())} with transparent pixels, {r["size"]} px; one standard error of a test '
                    f'accuracy near 0.8: {error:.3f}.')
    rows = [[set_name, row['decode'], row['resize'], f'{row["validation"]:.4f}', f'{row["test"]:.4f}',
             f'{_pooled(row, r["images"]):.4f}']
            for set_name, r in sorted(stored.items()) for row in r['rows']]
    write_table(
        'preprocessing_choices', 'Transparency and aspect ratio: a linear probe on frozen MobileNetV2 features',
        'Logistic regression on the standardised GAP features of MobileNetV2 (alpha 1.0, imagenet-torchvision), '
        'trained on the training split, accuracy on the validation and test splits, per way of decoding '
        'transparency and of making the image square (see the docstring of bench/preprocessing_choices.py). '
        'Data sets:\n\n' + '\n'.join(f'- {line}' for line in sets) + '\n',
        ['data set', 'transparency', 'resize', 'validation accuracy', 'test accuracy', 'validation + test'], rows)


def _pooled(row: dict, images: dict) -> float:
    """Accuracy over the validation and test images together (less noisy than either)."""
    n_val, n_test = images['validation'], images['test']
    return (row['validation'] * n_val + row['test'] * n_test) / (n_val + n_test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data', type=Path, help='DATA/{train,validation,test}/<class>/<images>')
    parser.add_argument('--size', type=int, default=160)
    parser.add_argument('--name', help='the data set\'s name in the results (default: the folder\'s name)')
    args = parser.parse_args(argv)
    result = measure(args.data.resolve(), args.size)
    write_results(args.name or args.data.resolve().name, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
