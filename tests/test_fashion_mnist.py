"""The Fashion-MNIST exporter, on small IDX files written by the test."""
import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from pipeline import fashion_mnist


def write_idx(folder, split, images, labels):
    images_file, labels_file = fashion_mnist._FILES[split]
    with gzip.open(folder / images_file, 'wb') as f:
        f.write(struct.pack('>IIII', 0x803, len(images), 28, 28) + images.tobytes())
    with gzip.open(folder / labels_file, 'wb') as f:
        f.write(struct.pack('>II', 0x801, len(labels)) + labels.tobytes())


def test_export_writes_the_chosen_images_per_class(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.array([i % 10 for i in range(30)], dtype=np.uint8)
    write_idx(tmp_path, 'test', images, labels)
    out = tmp_path / 'out'
    status = fashion_mnist.main(['--out', str(out), '--split', 'test', '--classes', 'trouser', 'bag',
                                 '--per-class', '2', '--skip', '1', '--source', str(tmp_path)])
    assert status == 0
    assert sorted(p.name for p in (out / 'trouser').iterdir()) == ['test-00011.png', 'test-00021.png']
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'bag' / 'test-00018.png')), images[18])


def test_not_enough_images_and_missing_package(tmp_path, capsys):
    write_idx(tmp_path, 'test', np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8))
    assert fashion_mnist.main(['--out', str(tmp_path / 'o'), '--classes', 'tshirt_top', '--per-class', '5',
                               '--source', str(tmp_path)]) == 2
    assert 'has only 3 images' in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
        fashion_mnist.load('train', tmp_path)
