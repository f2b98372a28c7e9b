"""bench.datasets' exporter on a small folder of generated images: no Debian package needed."""
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import datasets
from conftest import png_header_only


def encoded(size, seed, fmt='PNG', mode='RGBA') -> bytes:
    """A noisy image; with alpha, its left half is half transparent."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:, : size[0] // 2, 3] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels, 'RGBA').convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.fixture
def source(tmp_path):
    """root/cats/**, root/dogs/**, with every kind of file the exporter must sort out."""
    root = tmp_path / 'stamps'
    kept = {'cats': [], 'dogs': []}
    for i in range(12):
        kept['cats'].append(write(root / 'cats' / ('wild' if i % 2 else 'house') / f'cat{i}.png',
                                  encoded((40 + i, 20), seed=i)))
        kept['dogs'].append(write(root / 'dogs' / f'dog{i}.png', encoded((20, 34 + i), seed=100 + i)))
    kept['dogs'].append(write(root / 'dogs' / 'photo.jpg', encoded((32, 32), seed=200, fmt='JPEG', mode='RGB')))
    kept['dogs'].append(write(root / 'dogs' / 'palette.gif', encoded((33, 32), seed=201, fmt='GIF', mode='P')))
    tiff = write(root / 'cats' / 'scan.tif', encoded((48, 24), seed=300, fmt='TIFF'))
    # Skipped or ignored:
    write(root / 'cats' / 'house' / 'cat0_copy.png', kept['cats'][0])  # identical, same class
    both = encoded((30, 30), seed=400)
    write(root / 'cats' / 'ambiguous.png', both)  # identical file in two classes
    write(root / 'dogs' / 'ambiguous_too.png', both)
    write(root / 'dogs' / 'dog1_mirror.png', encoded((20, 35), seed=500))  # Tux Paint's mirrored copy
    # dog2.png is its rendering, as Tux Paint ships both:
    write(root / 'dogs' / 'dog2.svg', b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    write(root / 'dogs' / 'huge.png', png_header_only(5000, 5000))  # 25 megapixels, header only
    write(root / 'dogs' / 'bomb.png', png_header_only(20000, 20000))  # more than Pillow opens at all
    write(root / 'dogs' / 'tiny.png', encoded((10, 8), seed=600))
    write(root / 'dogs' / 'broken.png', encoded((40, 40), seed=700)[:60])  # truncated
    write(root / 'dogs' / 'dog0.txt', b'A dog.')
    write(root / 'dogs' / 'dog0_desc_fr.ogg', b'OggS')
    write(root / 'dogs' / 'drawings' / 'not_a_dog.png', encoded((40, 40), seed=800))  # an excluded folder
    image_set = datasets.ImageSet(
        'test', ('no-such-package-for-tests',), root, 'public domain',
        {'cats': datasets.ImageClass(('cats',), 'cats'),
         'dogs': datasets.ImageClass(('dogs',), 'dogs', exclude=('dogs/drawings',))})
    return image_set, kept, tiff


def exported(out: Path):
    """{relative path: bytes} of every file under out."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob('*')) if p.is_file()}


def test_export_dedups_skips_and_splits_by_content(source, tmp_path):
    image_set, kept, tiff = source
    out = tmp_path / 'out'
    result = datasets.export(image_set, out, max_per_class=None)
    files = exported(out)

    assert result.skipped == {
        'identical to another file of its class': 1,
        'identical file in two classes (dropped from both)': 2,
        'variant of another file (X_mirror, X.svg next to X.png)': 2,
        f'more than {datasets.MAX_PIXELS:,} pixels': 2,
        f'smaller than {datasets.MIN_LONGER_SIDE} px': 1,
        'not decodable': 1,
    }
    assert result.ignored == 2
    assert {path.split('/')[0] for path in files} == set(datasets.SPLITS)
    # Copied files arrive byte for byte, each once, in the split its content decides.
    by_digest = {}
    for path, data in files.items():
        split, label, name = path.split('/')
        assert sha(data) not in by_digest, f'{path} exported twice'
        by_digest[sha(data)] = (split, label)
    for label, sources in kept.items():
        for data in sources:
            assert by_digest[sha(data)] == (datasets.split_of(sha(data)), label)
    # The TIFF, which TensorFlow cannot decode, is converted to a PNG with its alpha.
    (converted,) = [path for path in files if 'scan' in path]
    assert converted.endswith('.png') and converted.split('/')[:2] == [datasets.split_of(sha(tiff)), 'cats']
    with Image.open(io.BytesIO(files[converted])) as image, Image.open(io.BytesIO(tiff)) as original:
        assert image.format == 'PNG' and image.mode == 'RGBA'
        np.testing.assert_array_equal(np.asarray(image), np.asarray(original.convert('RGBA')))
    assert len(files) == len(kept['cats']) + len(kept['dogs']) + 1
    # The same export again gives the same files.
    again = tmp_path / 'again'
    datasets.export(image_set, again)
    assert exported(again) == files

    counts = {split: len(images) for split, images in result.images.items()}
    assert sum(counts.values()) == len(files)
    text = datasets.summary(image_set, result)
    ratios = [image.width / image.height for images in result.images.values() for image in images]
    assert f'min {min(ratios):.2f}' in text and f'max {max(ratios):.2f}' in text


def test_summary_counts_alpha_and_transparency(source, tmp_path):
    image_set, kept, _ = source
    result = datasets.export(image_set, tmp_path / 'out')
    everything = [image for images in result.images.values() for image in images]
    by_name = {image.path.name: image for image in everything}
    assert by_name['cat0.png'].has_alpha and by_name['cat0.png'].transparent
    assert not by_name['photo.jpg'].has_alpha and not by_name['photo.jpg'].transparent
    all_row = datasets.summary(image_set, result).splitlines()[3]
    assert all_row.split()[0] == 'all'
    total, alpha, transparent, converted = map(int, all_row.split()[4:8])
    assert (total, alpha, transparent, converted) == (len(everything), len(everything) - 2, len(everything) - 2, 1)


def test_max_per_class_is_a_deterministic_growing_subset(source, tmp_path):
    image_set, kept, _ = source
    full = datasets.export(image_set, tmp_path / 'full')
    two = datasets.export(image_set, tmp_path / 'two', max_per_class=2)
    five = datasets.export(image_set, tmp_path / 'five', max_per_class=5)
    digests = lambda result, label: {i.digest for images in result.images.values() for i in images if i.label == label}
    for label in ('cats', 'dogs'):
        assert len(digests(two, label)) == 2 and len(digests(five, label)) == 5
        assert digests(two, label) < digests(five, label) < digests(full, label)
        smallest = sorted(digests(full, label), key=lambda d: datasets.key(d, 'select'))[:5]
        assert digests(five, label) == set(smallest)
    # Each capped image keeps the split it has in the full export.
    where = {i.digest: split for split, images in full.images.items() for i in images}
    assert all(where[i.digest] == split for split, images in five.images.items() for i in images)


def test_split_proportions_and_independence_from_selection():
    digests = [sha(str(i).encode()) for i in range(6000)]
    splits = [datasets.split_of(d) for d in digests]
    for split, share in zip(datasets.SPLITS, (0.70, 0.15, 0.15)):
        assert abs(splits.count(split) / len(digests) - share) < 0.02, split
    # The images a cap keeps are not biased towards one split.
    candidates = [datasets.Candidate('cats', Path(f'{d}.png'), f'{d}.png', d) for d in digests]
    kept = datasets.select(candidates, max_per_class=1000)
    assert len(kept) == 1000
    assert abs([datasets.split_of(c.digest) for c in kept].count('train') / 1000 - 0.70) < 0.05


def test_out_folder_is_replaced_only_when_it_is_an_export(source, tmp_path):
    image_set, _, _ = source
    out = tmp_path / 'out'
    datasets.export(image_set, out)
    (out / 'train' / 'stale').mkdir()
    datasets.export(image_set, out)
    assert not (out / 'train' / 'stale').exists()
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError):
        datasets.export(image_set, tmp_path)
    assert (tmp_path / 'notes.txt').exists()


def test_main_without_the_package_prints_the_install_command(source, tmp_path, capsys, monkeypatch):
    image_set, _, _ = source
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    status = datasets.main(['test', '--out', str(tmp_path / 'out')], sets={'test': image_set})
    assert status == 2
    assert ('sudo apt-get install -y -qq --no-install-recommends no-such-package-for-tests'
            in capsys.readouterr().err)
    assert not (tmp_path / 'out').exists()


def test_root_installs_the_missing_package_with_apt_get(source, capsys, monkeypatch):
    image_set, _, _ = source
    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    monkeypatch.setattr(datasets.shutil, 'which', lambda name: f'/usr/bin/{name}')
    monkeypatch.setattr(datasets, 'package_version', lambda package: None)
    commands = []
    datasets.ensure_installed(image_set, run=lambda command, check: commands.append(command))
    assert commands == [['apt-get', 'update', '-qq'],
                        ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'no-such-package-for-tests']]
    assert 'Installing Debian package(s) no-such-package-for-tests' in capsys.readouterr().out


def test_main_exports_and_lists(source, tmp_path, capsys, monkeypatch):
    image_set, kept, _ = source
    monkeypatch.setattr(datasets, 'ensure_installed', lambda image_set: None)
    assert datasets.main(['test', '--out', str(tmp_path / 'out'), '--max-per-class', '3'],
                         sets={'test': image_set}) == 0
    text = capsys.readouterr().out
    assert 'at most 3 images per class' in text and 'aspect ratio (width/height): min' in text
    assert len(exported(tmp_path / 'out')) == 6
    assert datasets.main(['--list'], sets={'test': image_set}) == 0
    assert 'no-such-package-for-tests (not installed)' in capsys.readouterr().out


def test_the_real_sets_are_described():
    assert set(datasets.SETS) == {'tuxpaint', 'openclipart'}
    for image_set in datasets.SETS.values():
        assert image_set.licence and len(image_set.classes) >= 5
        assert all(image_class.sources and image_class.reason for image_class in image_set.classes.values())
