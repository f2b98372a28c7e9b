"""ImageExampleGen's executor on messy temporary folders: what is ingested, skipped, converted, split."""
import errno
import glob
import io
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from components.example_gen import class_names
from components.example_gen import executor as example_gen
from components.transform.image_decoding import decode_rgb
from components.example_gen.ingestion import IngestionError, data_folder, skips
from components.example_gen.ingestion.data_folder import CLASS_FOLDERS
from components.example_gen.ingestion.report import REPORT_FILE
from conftest import (CLASS_COLOURS, UPRIGHT_BOTTOM, UPRIGHT_TOP, example_gen_exec_properties, image_bytes,
                      make_image_folder, png_header_only, sideways_photo)
from components.example_gen.spec import IngestionConfig, SplitRatios
from test_preprocessing import transform

SPLITS = ('train', 'eval', 'test')


def run_executor(data_root, out_dir, ratios=(8, 1, 1), **ingestion):
    """The executor as TFX calls it, with the configs ImageExampleGen would build."""
    config = IngestionConfig(split_ratios=SplitRatios(**dict(zip(SPLITS, ratios, strict=True))), **ingestion)
    examples = standard_artifacts.Examples()
    examples.uri = str(out_dir)
    example_gen.Executor().Do({}, {'examples': [examples]}, example_gen_exec_properties(data_root, config))
    return examples


def read_split(uri, split):
    """filename -> (label, image_raw, content_sha256) of one split."""
    records = tf.data.TFRecordDataset(glob.glob(f'{uri}/Split-{split}/*'), compression_type='GZIP')
    result = {}
    for record in records:
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        name = feature['filename'].bytes_list.value[0].decode()
        assert name not in result, f'{name} ingested twice'
        result[name] = (feature['label'].int64_list.value[0], feature['image_raw'].bytes_list.value[0],
                        feature['content_sha256'].bytes_list.value[0].decode())
    return result


def read_all(uri):
    return {split: read_split(uri, split) for split in SPLITS}


def split_of(splits):
    return {name: split for split, files in splits.items() for name in files}


def load_report(artifact):
    return json.loads(open(os.path.join(artifact.uri, REPORT_FILE)).read())


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- A corpus with one file of every kind a real folder holds ---------------------------------

# Files that must be ingested, besides the 30 generated ones, and how.
AS_IS = ('cat/nested/deeper/deep.png', 'cat/cmyk.jpg', 'dog/gray16.png', 'fox/palette_alpha.png')
CONVERTED = {'cat/scan.tiff': 'TIFF RGB -> PNG RGB', 'dog/photo.webp': 'WEBP RGB -> PNG RGB',
             'fox/sideways.jpg': 'JPEG RGB -> JPEG RGB, EXIF orientation 6 applied'}
DUPLICATES = {  # copy -> original
    'cat/again/copy.png': 'cat/cat_002.png',      # same class, another name
    'dog/looks_like_a_dog.png': 'cat/cat_004.png',  # another class: a labelling error
    'fox/link_inside.png': 'fox/fox_006.png',     # a symbolic link that stays inside data_root
}
SKIPPED = {
    'cat/.DS_Store': skips.HIDDEN_OR_SYSTEM,
    'dog/._photo.jpg': skips.HIDDEN_OR_SYSTEM,
    'fox/Thumbs.db': skips.HIDDEN_OR_SYSTEM,
    'cat/.thumbnails/': skips.HIDDEN_OR_SYSTEM,
    '__MACOSX/': skips.HIDDEN_OR_SYSTEM,
    'fox/empty.png': skips.EMPTY_FILE,
    'fox/truncated.png': skips.CORRUPT_IMAGE,
    'cat/truncated.jpg': skips.CORRUPT_IMAGE,
    'dog/text.jpg': skips.NOT_AN_IMAGE,
    'dog/notes.txt': skips.UNSUPPORTED_EXTENSION,
    'cat/bomb.png': skips.TOO_MANY_PIXELS,
    'cat/locked.jpg': skips.UNREADABLE,
    'cat/broken_link.jpg': skips.BROKEN_SYMLINK,
    'dog/loop_a.jpg': skips.SYMLINK_LOOP,
    'dog/loop_b.jpg': skips.SYMLINK_LOOP,
    'fox/itself/': skips.SYMLINK_LOOP,
    'cat/outside.png': skips.SYMLINK_OUTSIDE_DATA_ROOT,
    'dog/outside_folder': skips.SYMLINK_OUTSIDE_DATA_ROOT,
    'cat/caf\\xe9.jpg': skips.NON_UTF8_NAME,
    'fox/\\xff_folder/': skips.NON_UTF8_NAME,
    'dog/pipe.jpg': skips.NOT_A_REGULAR_FILE,
    'labels.csv': skips.OUTSIDE_CLASS_FOLDER,
}


def build_messy_corpus(root):
    folder = make_image_folder(root / 'images', per_class=10)
    cat, dog, fox = (folder / name for name in CLASS_COLOURS)
    good = image_bytes(CLASS_COLOURS['cat'], seed=99)
    for path in ('cat/nested/deeper', 'cat/again', 'cat/.thumbnails', '__MACOSX'):
        (folder / path).mkdir(parents=True)
    (cat / 'nested' / 'deeper' / 'deep.png').write_bytes(image_bytes(CLASS_COLOURS['cat'], seed=50))
    pixels = Image.open(io.BytesIO(image_bytes(CLASS_COLOURS['fox'], seed=51))).convert('RGB')
    (cat / 'cmyk.jpg').write_bytes(encode(pixels.convert('CMYK'), 'JPEG'))
    (dog / 'gray16.png').write_bytes(encode(Image.fromarray(np.full((20, 24), 30000, np.uint16)), 'PNG'))
    (fox / 'palette_alpha.png').write_bytes(encode(pixels.convert('P'), 'PNG', transparency=0))
    (cat / 'scan.tiff').write_bytes(encode(pixels, 'TIFF'))
    (dog / 'photo.webp').write_bytes(encode(pixels, 'WEBP', lossless=True))
    (fox / 'sideways.jpg').write_bytes(sideways_photo())
    (cat / 'again' / 'copy.png').write_bytes((cat / 'cat_002.png').read_bytes())
    (dog / 'looks_like_a_dog.png').write_bytes((cat / 'cat_004.png').read_bytes())
    os.symlink('fox_006.png', fox / 'link_inside.png')

    (cat / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
    (dog / '._photo.jpg').write_bytes(b'\0\5\26\7 resource fork')
    (fox / 'Thumbs.db').write_bytes(b'\xd0\xcf\x11\xe0')
    (cat / '.thumbnails' / 'small.png').write_bytes(good)
    (folder / '__MACOSX' / '._cat_000.png').write_bytes(b'x')
    (fox / 'empty.png').write_bytes(b'')
    (fox / 'truncated.png').write_bytes(image_bytes(CLASS_COLOURS['fox'], size=(200, 200))[:500])
    (cat / 'truncated.jpg').write_bytes(image_bytes(CLASS_COLOURS['cat'], size=(200, 200), fmt='JPEG')[:1500])
    (dog / 'text.jpg').write_text('not a jpeg at all')
    (dog / 'notes.txt').write_text('not an image')
    (cat / 'bomb.png').write_bytes(png_header_only(50_000, 50_000))
    (cat / 'locked.jpg').write_bytes(good)
    os.chmod(cat / 'locked.jpg', 0)
    os.symlink('missing.jpg', cat / 'broken_link.jpg')
    os.symlink('loop_b.jpg', dog / 'loop_a.jpg')
    os.symlink('loop_a.jpg', dog / 'loop_b.jpg')
    os.symlink('.', fox / 'itself')
    outside = root / 'elsewhere'
    outside.mkdir()
    (outside / 'good.png').write_bytes(good)
    os.symlink(outside / 'good.png', cat / 'outside.png')
    os.symlink(outside, dog / 'outside_folder')
    with open(os.fsencode(cat) + b'/caf\xe9.jpg', 'wb') as f:
        f.write(good)
    os.mkdir(os.fsencode(fox) + b'/\xff_folder')
    with open(os.fsencode(fox) + b'/\xff_folder/inside.png', 'wb') as f:
        f.write(good)
    os.mkfifo(dog / 'pipe.jpg')
    (folder / 'labels.csv').write_text('file,label\n')
    return folder


def _refuse_files_without_read_permission(read_bytes):
    """What reading a mode-000 file does for any user but root, who ignores permission bits."""
    def read(data_root, relative):
        path = os.path.join(data_root, relative)
        if os.stat(path).st_mode & 0o444 == 0:
            raise PermissionError(errno.EACCES, 'Permission denied', path)
        return read_bytes(data_root, relative)
    return read


@pytest.fixture(scope='module')
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp('messy')
    folder = build_messy_corpus(root)
    with pytest.MonkeyPatch.context() as patch:
        if os.geteuid() == 0:
            patch.setattr(data_folder, 'read_bytes', _refuse_files_without_read_permission(data_folder.read_bytes))
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger('components')
        patch.setattr(logger, 'level', logging.INFO)
        logger.addHandler(handler)
        try:
            artifact = run_executor(folder, root / 'out')
        finally:
            logger.removeHandler(handler)
    return dict(folder=folder, artifact=artifact, splits=read_all(artifact.uri), report=load_report(artifact),
                log='\n'.join(record.getMessage() for record in records))


def test_every_good_image_is_ingested_once_with_its_label(messy):
    ingested = {name: value for files in messy['splits'].values() for name, value in files.items()}
    generated = {f'{name}/{path.name}' for name in CLASS_COLOURS for path in (messy['folder'] / name).glob(f'{name}_*')}
    assert len(generated) == 30
    assert set(ingested) == generated | set(AS_IS) | set(CONVERTED) | set(DUPLICATES)
    for name, (label, _, _) in ingested.items():
        assert ['cat', 'dog', 'fox'][label] == name.split('/')[0]
    report = messy['report']
    assert report['total'] == len(ingested) and report['layout'] == CLASS_FOLDERS
    assert class_names.read(messy['artifact'].uri) == ['cat', 'dog', 'fox']


def test_every_bad_file_is_reported_with_its_reason(messy):
    reasons = {item['file']: item['reason'] for item in messy['report']['skipped']}
    assert reasons == SKIPPED
    assert messy['artifact'].get_int_custom_property('num_skipped') == len(SKIPPED)
    assert messy['report']['skipped_by_reason'][skips.HIDDEN_OR_SYSTEM] == 5
    assert messy['report']['reasons'] == {reason: skips.EXPLANATIONS[reason] for reason in set(SKIPPED.values())}


def test_images_transform_decodes_pass_untouched(messy):
    ingested = {name: value for files in messy['splits'].values() for name, value in files.items()}
    for name in AS_IS + tuple(f'cat/cat_00{i}.png' for i in (0, 2)):
        assert ingested[name][1] == (messy['folder'] / name).read_bytes(), name


def test_conversions_are_reported_and_decode_in_the_transform_graph(messy):
    assert {item['file']: item['conversion'] for item in messy['report']['converted']} == CONVERTED
    ingested = {name: value for files in messy['splits'].values() for name, value in files.items()}
    odd = list(CONVERTED) + list(AS_IS)
    transformed, _ = transform([{'image_raw': [ingested[name][1]], 'label': [ingested[name][0]],
                                 'filename': [name.encode()]} for name in odd])
    for row in transformed:
        image = np.asarray(row['image'])
        assert image.shape == (40, 40, 3) and -1 <= image.min() and image.max() <= 1


def test_sideways_photo_comes_out_upright(messy):
    ingested = {name: value for files in messy['splits'].values() for name, value in files.items()}
    upright = decode_rgb(ingested['fox/sideways.jpg'][1], (255, 255, 255)).numpy().astype(int)
    assert upright.shape == (30, 20, 3)
    np.testing.assert_allclose(upright[:10].mean(axis=(0, 1)), UPRIGHT_TOP, atol=8)
    np.testing.assert_allclose(upright[-10:].mean(axis=(0, 1)), UPRIGHT_BOTTOM, atol=8)


def test_duplicates_are_reported_and_share_a_split(messy):
    where = split_of(messy['splits'])
    groups = {frozenset(item['file'] for item in group['files']): group for group in messy['report']['duplicates']}
    assert set(groups) == {frozenset(pair) for pair in DUPLICATES.items()}
    for copy, original in DUPLICATES.items():
        group = groups[frozenset((copy, original))]
        assert where[copy] == where[original]
        assert {item['split'] for item in group['files']} == {where[copy]}
        assert group['conflicting_labels'] == (copy.split('/')[0] != original.split('/')[0])
        assert not group['across_splits']


def test_summary_in_the_log(messy):
    log = messy['log']
    assert 'Ingested 40 images of 3 classes (class_folders): skipped 22, converted 3, 3 groups of duplicates.' in log
    assert 'labelling error, same image in several classes: cat/cat_004.png, dog/looks_like_a_dog.png' in log
    assert '1 too_many_pixels' in log and 'converted: 1 JPEG RGB -> JPEG RGB, 1 TIFF' in log


# --- Splits: by content, stable, in the given proportions ---------------------------------------

def test_adding_ten_percent_new_images_moves_none_of_the_old(tmp_path):
    folder = make_image_folder(tmp_path / 'images', per_class=30)
    before = split_of(read_all(run_executor(folder, tmp_path / 'first').uri))
    added = []
    for name, colour in CLASS_COLOURS.items():
        for i in range(3):  # 9 new images: 10% of 90
            (folder / name / f'new_{i}.png').write_bytes(image_bytes(colour, seed=1000 + i))
            added.append(f'{name}/new_{i}.png')
    after = split_of(read_all(run_executor(folder, tmp_path / 'second').uri))
    assert set(after) == set(before) | set(added)
    moved = {name: (split, after[name]) for name, split in before.items() if after[name] != split}
    assert not moved


def test_split_follows_content_not_name(tmp_path):
    folder = make_image_folder(tmp_path / 'images', per_class=20)
    before = split_of(read_all(run_executor(folder, tmp_path / 'first').uri))
    for name in CLASS_COLOURS:
        (folder / name / 'renamed').mkdir()
        for path in sorted((folder / name).glob('*.*'))[:5]:
            shutil.move(path, folder / name / 'renamed' / f'other_{path.name}')
    after = split_of(read_all(run_executor(folder, tmp_path / 'second').uri))
    renamed = [name for name in after if '/renamed/' in name]
    assert len(renamed) == 15
    for name in renamed:
        original = name.replace('renamed/other_', '')
        assert after[name] == before[original]


def test_examples_are_not_written_class_by_class(tmp_path):
    folder = make_image_folder(tmp_path / 'images', per_class=30)
    first = read_split(run_executor(folder, tmp_path / 'first').uri, 'train')
    labels = [label for label, _, _ in first.values()]  # in the order the Trainer reads them
    changes = sum(a != b for a, b in zip(labels, labels[1:], strict=False))
    assert changes > len(labels) / 3, labels  # class by class would change class twice
    again = read_split(run_executor(folder, tmp_path / 'second').uri, 'train')
    assert list(again) == list(first)  # the same order on every run


def test_split_ratios_are_respected(tmp_path):
    folder = make_image_folder(tmp_path / 'images', per_class=40)
    splits = read_all(run_executor(folder, tmp_path / 'out', ratios=(1, 1, 2)).uri)
    sizes = {split: len(files) for split, files in splits.items()}
    assert sum(sizes.values()) == 120
    assert 40 <= sizes['test'] <= 80 and sizes['train'] < sizes['test']


# --- Pre-split folders ----------------------------------------------------------------------------

def make_pre_split(root, split_folders=('train', 'val', 'test'), per_split=4, classes=('cat', 'dog')):
    for split_index, split in enumerate(split_folders):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_split):
                seed = 100 * split_index + i
                (root / split / name / f'{i}.png').write_bytes(image_bytes(CLASS_COLOURS[name], seed=seed))
    return root


def test_pre_split_folders_are_used_as_given(tmp_path):
    root = make_pre_split(tmp_path / 'images')
    (root / 'train' / 'fox').mkdir()  # a class that is not in val/
    for i in range(2):
        for split in ('train', 'test'):
            (root / split / 'fox').mkdir(exist_ok=True)
            (root / split / 'fox' / f'{i}.png').write_bytes(image_bytes(CLASS_COLOURS['fox'], seed=500 + i))
    (root / 'README.md').write_text('about this data')
    artifact = run_executor(root, tmp_path / 'out')
    splits = read_all(artifact.uri)
    folder_of_split = {'train': 'train', 'eval': 'val', 'test': 'test'}
    for split, files in splits.items():
        assert files and all(name.split('/')[0] == folder_of_split[split] for name in files)
        for name, (label, _, _) in files.items():
            assert ['cat', 'dog', 'fox'][label] == name.split('/')[1]
    report = load_report(artifact)
    assert report['layout'] == 'pre_split'
    assert report['counts']['eval'] == {'cat': 4, 'dog': 4, 'fox': 0}
    assert report['missing_classes'] == {'eval': ['fox']}
    assert {item['file']: item['reason'] for item in report['skipped']} == {'README.md': skips.OUTSIDE_CLASS_FOLDER}
    # The same fox images are in train and test: leakage the folders brought, reported.
    assert len(report['duplicates']) == 2 and all(group['across_splits'] for group in report['duplicates'])


def test_layout_can_be_forced(tmp_path):
    root = make_pre_split(tmp_path / 'images', per_split=6)
    artifact = run_executor(root, tmp_path / 'out', ratios=(1, 1, 1), layout='class_folders')
    assert load_report(artifact)['class_names'] == ['test', 'train', 'val']


@pytest.mark.parametrize('folders,message', [
    (('train', 'test'), 'no folder for split eval'),
    (('train', 'val', 'validation', 'test'), 'several folders for split eval: val, validation'),
])
def test_incomplete_pre_split_folders_are_named(tmp_path, folders, message):
    root = make_pre_split(tmp_path / 'images', split_folders=folders, per_split=1)
    with pytest.raises(IngestionError, match=message):
        data_folder.detect_layout(str(root))


# --- Classes ---------------------------------------------------------------------------------------

def test_single_class_is_an_error(tmp_path):
    make_image_folder(tmp_path / 'images', classes={'cat': (1, 2, 3)})
    with pytest.raises(IngestionError, match=r"at least two class folders, found 1: \['cat'\]"):
        run_executor(tmp_path / 'images', tmp_path / 'out')


def test_empty_class_is_named(tmp_path, image_folder):
    (image_folder / 'zebra').mkdir()
    (image_folder / 'zebra' / '.DS_Store').write_bytes(b'x')
    with pytest.raises(IngestionError, match='zebra: no usable image'):
        run_executor(image_folder, tmp_path / 'out')


def _add_single_image_class(folder):
    (folder / 'zebra').mkdir()
    (folder / 'zebra' / 'only.png').write_bytes(image_bytes((128, 128, 128), seed=7))
    (folder / 'zebra' / 'broken.jpg').write_bytes(b'garbage')


def test_class_missing_from_train_or_test_is_named(tmp_path, image_folder):
    _add_single_image_class(image_folder)
    with pytest.raises(IngestionError, match=r'zebra: no image in the (train|test) split.*drop_unusable_classes'):
        run_executor(image_folder, tmp_path / 'out')


def test_unusable_classes_can_be_dropped(tmp_path, image_folder):
    _add_single_image_class(image_folder)
    artifact = run_executor(image_folder, tmp_path / 'out', drop_unusable_classes=True)
    report = load_report(artifact)
    assert report['class_names'] == class_names.read(artifact.uri) == ['cat', 'dog', 'fox']
    assert list(report['dropped_classes']) == ['zebra']
    ingested = {name: value for files in read_all(artifact.uri).values() for name, value in files.items()}
    assert len(ingested) == 30 and not any(name.startswith('zebra/') for name in ingested)
    assert {label for label, _, _ in ingested.values()} == {0, 1, 2}
