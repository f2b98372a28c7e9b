"""Writes Fashion-MNIST images as a class-per-folder image dataset.

Fashion-MNIST (Zalando SE, MIT licence) is the one real labelled image dataset this project
can get without internet: Debian's package `dataset-fashion-mnist` installs it under
/usr/share/datasets/fashion-mnist. The repository's sample data (data/sample) and the
benchmarks are exported with this command, so their provenance is reproducible:

    python -m pipeline.fashion_mnist --out data/sample --split test \
        --classes tshirt_top trouser sneaker bag --per-class 50
"""
from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

DEBIAN_DIR = Path('/usr/share/datasets/fashion-mnist')
CLASS_NAMES = ('tshirt_top', 'trouser', 'pullover', 'dress', 'coat',
               'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot')
_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with gzip.open(path, 'rb') as f:
        data = f.read()
    magic, count = struct.unpack('>II', data[:8])
    if magic != expected_magic:
        raise ValueError(f'{path} is not an IDX file of the expected kind (magic {magic:#x})')
    if expected_magic == 0x803:
        rows, cols = struct.unpack('>II', data[8:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(data, np.uint8, offset=8)


def load(split: str, source_dir: Path = DEBIAN_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, 28, 28], labels uint8 [N]) of the 'train' or 'test' split."""
    images_file, labels_file = _FILES[split]
    if not (source_dir / images_file).exists():
        raise FileNotFoundError(
            f'Fashion-MNIST not found in {source_dir}. Install it with '
            f'`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu).')
    images = _read_idx(source_dir / images_file, 0x803)
    labels = _read_idx(source_dir / labels_file, 0x801)
    if len(images) != len(labels):
        raise ValueError(f'{len(images)} images but {len(labels)} labels in {source_dir}')
    return images, labels


def select(labels: np.ndarray, classes: Sequence[str], per_class: int,
           skip: int = 0) -> Dict[str, List[int]]:
    """The first `per_class` indices of each class after skipping `skip` of them (deterministic)."""
    chosen = {}
    for name in classes:
        indices = np.flatnonzero(labels == CLASS_NAMES.index(name))[skip:skip + per_class]
        if len(indices) < per_class:
            raise ValueError(f'class {name} has only {len(indices)} images after skipping {skip}')
        chosen[name] = [int(i) for i in indices]
    return chosen


def export(out: Path, split: str, classes: Sequence[str], per_class: int,
           skip: int = 0, source_dir: Path = DEBIAN_DIR) -> Iterator[Path]:
    """Writes out/<class>/<split>-<index>.png and yields each path."""
    from PIL import Image  # Pillow is only needed to write files.
    images, labels = load(split, source_dir)
    for name, indices in select(labels, classes, per_class, skip).items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for index in indices:
            path = out / name / f'{split}-{index:05d}.png'
            Image.fromarray(images[index], mode='L').save(path, optimize=True)
            yield path


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, required=True, help='folder to create')
    parser.add_argument('--split', choices=sorted(_FILES), default='test')
    parser.add_argument('--classes', nargs='+', choices=CLASS_NAMES, default=list(CLASS_NAMES))
    parser.add_argument('--per-class', type=int, default=50)
    parser.add_argument('--skip', type=int, default=0,
                        help='skip this many images of each class first (for disjoint sets)')
    parser.add_argument('--source', type=Path, default=DEBIAN_DIR)
    args = parser.parse_args(argv)
    try:
        count = sum(1 for _ in export(args.out, args.split, args.classes, args.per_class,
                                      args.skip, args.source))
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(f'wrote {count} images of {len(args.classes)} classes to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
