"""Two more real labelled image sets for the benchmarks, exported as pre-split folders.

    python -m bench.datasets --list
    python -m bench.datasets NAME --out DIR [--max-per-class N]

writes DIR/train/<class>/<file>, DIR/validation/<class>/<file> and DIR/test/<class>/<file>
(the pipeline's `layout: pre_split`). Like Fashion-MNIST (pipeline/fashion_mnist.py), both come
from Debian packages, the only source of real images this project has without internet; a
missing package is installed when running as root where apt-get exists, or the command to
install it is printed.

tuxpaint     Debian `tuxpaint-stamps-default`: the stamps of the children's drawing program
             Tux Paint. Licence GPL-2 (version 2 or, at your option, any later version), as
             /usr/share/doc/tuxpaint-stamps-default/copyright says for all its files. Mostly
             photographs of real objects cut out onto a transparent background, of every aspect
             ratio, plus some cartoon drawings. Its SVG stamps are rendered to PNG (keeping
             alpha) with rsvg-convert from `librsvg2-bin`. A small set: ~450 images, only one
             class reaches 150.
openclipart  Debian `openclipart-png`: the Open Clip Art Library's drawings as transparent PNGs.
             Public domain (Creative Commons Public Domain Dedication, as
             /usr/share/doc/openclipart-png/copyright says). Vector-style clip art, not photos,
             of every aspect ratio, nearly all with an alpha channel. ~1,300 images.

Why these classes (TUXPAINT_CLASSES and OPENCLIPART_CLASSES below give each one's reason):
folders whose images share a kind of object an ImageNet backbone knows (animals, food,
vehicles, plants, people, household objects, flags), sub-folders merged (each alone is too
small). Left out: symbols, letters, road signs, icons, diagrams, and mixed folders whose name
says nothing about what the picture shows.

How files become a data set, the same for both (and for any ImageSet):
1. Files that are not images (Tux Paint's sounds and texts) are ignored; variants of another
   file in the same folder are skipped: Tux Paint's `X_mirror.png` (a mirrored copy of `X`)
   and `X.svg` when `X.png` is its rendering.
2. Identical files (same sha256) are kept once: within a class the first path wins; a file
   found in two classes is dropped from both (its label is ambiguous). So no image lands in
   two splits or two classes.
3. Each file is opened: more than MAX_PIXELS, longer side under MIN_LONGER_SIDE, or
   undecodable -> skipped and counted.
   JPEG, PNG, GIF and BMP (what TensorFlow decodes) are copied byte for byte, transparency
   included; SVG is rendered and any other format converted to PNG, keeping alpha.
4. --max-per-class keeps the N images of a class with the smallest sha256("select" + digest):
   deterministic, and a larger N only adds images. openclipart's default is 300 (its flags
   folder alone has ~500 images), tuxpaint's none.
5. The split is decided by sha256("split" + digest) of the file's content: 70% train, 15%
   validation, 15% test. Adding or removing other files never moves an image to another split.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

SPLITS = ('train', 'validation', 'test')
# Per mille of images per split, in SPLITS order.
SPLIT_PER_MILLE = (700, 150, 150)
# Larger images are skipped: a 20-megapixel RGBA PNG already decodes to 80 MB, and the pipeline's
# own limit (max_image_pixels, 100M by default) would refuse the largest (openclipart has 19
# images above 20M pixels, up to 20,990 x 29,700, 14 of them in the classes below).
MAX_PIXELS = 20_000_000
# Smaller images are skipped: openclipart has a few broken renderings of 3 x 2 to 27 x 16 pixels.
MIN_LONGER_SIDE = 32
# What TensorFlow's decode_image reads (PIL's format names): copied as they are.
TF_FORMATS = {'PNG': '.png', 'JPEG': '.jpg', 'GIF': '.gif', 'BMP': '.bmp'}
# Extensions of files that are images (others, like .txt and .ogg, are not looked at).
IMAGE_EXTENSIONS = {'.png', '.jpg', '.jpeg', '.gif', '.bmp', '.svg', '.tif', '.tiff', '.webp', '.xpm',
                    '.ppm', '.pgm', '.pbm', '.tga', '.ico'}
# The longer side SVG stamps are rendered at (Tux Paint's PNG stamps: median 150 px, 90% <= 400 px).
SVG_RENDER_SIZE = 300
SVG_RENDERER = 'rsvg-convert'


@dataclasses.dataclass(frozen=True)
class ImageClass:
    sources: Tuple[str, ...]  # folders under the set's root: 'a/b' with sub-folders, 'a/b/*' without
    reason: str
    exclude: Tuple[str, ...] = ()  # sub-folders of the sources left out


@dataclasses.dataclass(frozen=True)
class ImageSet:
    name: str
    packages: Tuple[str, ...]  # Debian packages: the images first, then helpers
    root: Path
    licence: str  # as the package's copyright file says
    classes: Dict[str, ImageClass]
    description: str = ''
    max_per_class: Optional[int] = None  # the default of --max-per-class


# The classes of each set: class name -> (source folders, a one-line reason).
TUXPAINT_CLASSES = {
    'animals': ImageClass(('animals',), 'photos of mammals, birds, fish, insects, shellfish: '
                          'the one class with ~150 images; merged, each kind alone has at most 70'),
    'food': ImageClass(('food',), 'fruit, vegetables, nuts and desserts, photos and drawings'),
    'household': ImageClass(('household',), 'dishes, kitchen things, hand tools, bins, a toilet: '
                            'objects of the house, many of them ImageNet classes'),
    'vehicles': ImageClass(('vehicles',), 'cars, trucks, trains, ships, planes, bicycles'),
    'plants': ImageClass(('plants',), 'photos of flowers, trees and mushrooms'),
    'clothes': ImageClass(('clothes',), 'hats, shoes and garments (mostly rendered SVG drawings)'),
}
OPENCLIPART_CLASSES = {
    'animals': ImageClass(('animals',), 'every animal folder merged (mammals, birds, bugs, fish, '
                          'dinosaurs): drawings of one kind of object'),
    'food': ImageClass(('food',), 'fruit, vegetables, desserts, breads, meats, beverages: drawings of food'),
    'people': ImageClass(('people/*',), 'drawings of persons, top folder only: its sub-folders '
                         'are smilies, stick men, body parts and clothing'),
    'flags': ImageClass(('signs_and_symbols/flags',), 'national, regional and signal flags: one '
                        'clear visual kind, mostly 3:2 or 2:1 rectangles; not semaphore/, which '
                        'shows a person holding two flags', exclude=('signs_and_symbols/flags/semaphore',)),
    'plants': ImageClass(('plants',), 'flowers, trees and potted plants'),
    'vehicles': ImageClass(('transportation/vehicles',), 'cars, trucks, buses, planes; not '
                           'transportation/ itself, which is half road signs, nor its sailing diagrams'),
}
SETS = {
    'tuxpaint': ImageSet(
        'tuxpaint', ('tuxpaint-stamps-default', 'librsvg2-bin'), Path('/usr/share/tuxpaint/stamps'),
        'GPL-2 (version 2 or any later version)', TUXPAINT_CLASSES,
        'Tux Paint stamps: cut-out photos and drawings with transparency'),
    'openclipart': ImageSet(
        'openclipart', ('openclipart-png',), Path('/usr/share/openclipart/png'),
        'public domain (Creative Commons Public Domain Dedication)', OPENCLIPART_CLASSES,
        'Open Clip Art Library: clip-art drawings with transparency',
        max_per_class=300),  # flags alone has ~500
}


class MissingPackage(RuntimeError):
    pass


# --- the source package ------------------------------------------------------------------------

def package_version(package: str) -> Optional[str]:
    """The installed version of a Debian package, or None."""
    if not shutil.which('dpkg-query'):
        return None
    result = subprocess.run(['dpkg-query', '-W', '-f', '${Status}\t${Version}', package],
                            capture_output=True, text=True)
    status, _, version = result.stdout.partition('\t')
    return version if result.returncode == 0 and status.endswith(' installed') else None


def ensure_installed(image_set: ImageSet, run: Callable = subprocess.run) -> None:
    """Installs the set's missing packages as root with apt-get, or raises MissingPackage."""
    missing = [p for p in image_set.packages if package_version(p) is None]
    if not missing and image_set.root.is_dir():
        return
    missing = missing or [image_set.packages[0]]
    command = ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *missing]
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        raise MissingPackage(f'the {image_set.name} set needs the Debian package(s) {", ".join(missing)}: '
                             f'run `sudo {" ".join(command)}` (Debian/Ubuntu)')
    print(f'Installing Debian package(s) {", ".join(missing)} for the {image_set.name} set: '
          f'{" ".join(command)}', flush=True)
    run(['apt-get', 'update', '-qq'], check=True)
    run(command, check=True)
    if not image_set.root.is_dir():
        raise MissingPackage(f'{" ".join(missing)} installed, but {image_set.root} does not exist')


# --- from files to candidates -----------------------------------------------------------------

@dataclasses.dataclass
class Candidate:
    """One source file that becomes one exported image."""
    label: str
    path: Path
    relative: str  # path relative to the set's root
    digest: str  # sha256 of the file's content
    encoded: Optional[bytes] = None  # set when converted; None: copied as it is
    extension: str = ''
    width: int = 0
    height: int = 0
    has_alpha: bool = False  # an alpha channel or a transparent palette colour
    transparent: bool = False  # and some pixel is actually (partly) transparent
    converted_from: str = ''


@dataclasses.dataclass
class Export:
    images: Dict[str, List[Candidate]]  # split -> images
    skipped: Dict[str, int]  # reason -> count
    ignored: int  # files that are not images


def _walk(root: Path, source: str) -> Iterable[Path]:
    recursive = not source.endswith('/*')
    folder = root / (source[:-2] if not recursive else source)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} is not a folder: is the package the expected version?')
    return sorted(p for p in (folder.rglob('*') if recursive else folder.glob('*')) if p.is_file())


def _is_variant(path: Path) -> bool:
    """Tux Paint's mirrored copies (X_mirror.png next to X.png) and SVGs next to their PNG rendering."""
    if path.stem.endswith('_mirror'):
        base = path.stem[:-len('_mirror')]
        return any((path.parent / (base + ext)).exists() for ext in ('.png', '.svg', '.jpg'))
    return path.suffix.lower() == '.svg' and path.with_suffix('.png').exists()


def key(digest: str, purpose: str) -> int:
    """A number from the file's content hash, independent for each purpose ('split', 'select')."""
    return int(hashlib.sha256(f'{purpose}:{digest}'.encode()).hexdigest()[:16], 16)


def split_of(digest: str) -> str:
    position = key(digest, 'split') % 1000
    for split, bound in zip(SPLITS, _cumulative(SPLIT_PER_MILLE)):
        if position < bound:
            return split
    raise AssertionError(position)


def _cumulative(values: Sequence[int]) -> List[int]:
    total, out = 0, []
    for value in values:
        total += value
        out.append(total)
    return out


def collect(image_set: ImageSet, skipped: collections.Counter) -> Tuple[List[Candidate], int]:
    """Every class's image files, without variants or duplicates (steps 1 and 2)."""
    ignored = 0
    found: List[Candidate] = []
    for label, image_class in image_set.classes.items():
        seen = set()
        excluded = tuple(image_set.root / folder for folder in image_class.exclude)
        for source in image_class.sources:
            for path in _walk(image_set.root, source):
                if any(folder in path.parents for folder in excluded):
                    continue
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored += 1
                    continue
                if path in seen:
                    continue
                seen.add(path)
                if _is_variant(path):
                    skipped['variant of another file (X_mirror, X.svg next to X.png)'] += 1
                    continue
                found.append(Candidate(label, path, path.relative_to(image_set.root).as_posix(),
                                       hashlib.sha256(path.read_bytes()).hexdigest()))
    by_digest: Dict[str, List[Candidate]] = collections.defaultdict(list)
    for image in found:
        by_digest[image.digest].append(image)
    unique = []
    for digest, copies in by_digest.items():
        labels = {image.label for image in copies}
        if len(labels) > 1:
            skipped['identical file in two classes (dropped from both)'] += len(copies)
            continue
        copies.sort(key=lambda image: image.relative)
        skipped['identical to another file of its class'] += len(copies) - 1
        unique.append(copies[0])
    unique.sort(key=lambda image: (image.label, image.relative))
    return unique, ignored


# --- reading one file ----------------------------------------------------------------------------

def _render_svg(path: Path) -> bytes:
    """The SVG as a PNG whose longer side is SVG_RENDER_SIZE, transparency kept."""
    if not shutil.which(SVG_RENDERER):
        raise MissingPackage(f'{SVG_RENDERER} renders SVG files: `sudo apt-get install librsvg2-bin`')
    result = subprocess.run([SVG_RENDERER, '--keep-aspect-ratio', '--width', str(SVG_RENDER_SIZE),
                             '--height', str(SVG_RENDER_SIZE), '--format', 'png', str(path)],
                            capture_output=True)
    if result.returncode or not result.stdout:
        raise ValueError(result.stderr.decode(errors='replace').strip() or 'no output')
    return result.stdout


def _has_alpha(image) -> bool:
    return image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info


def read(image: Candidate, skipped: collections.Counter) -> bool:
    """Fills in image's size and alpha, converting it if needed (step 3); False if it is skipped."""
    from PIL import Image, UnidentifiedImageError
    data = image.path.read_bytes()
    if image.path.suffix.lower() == '.svg':
        try:
            data = _render_svg(image.path)
        except ValueError:
            skipped['SVG that could not be rendered'] += 1
            return False
        image.encoded, image.converted_from = data, 'SVG'
    too_large = f'more than {MAX_PIXELS:,} pixels'
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # Pillow's DecompressionBombWarning: MAX_PIXELS is lower
            opened = Image.open(io.BytesIO(data))  # the header only
    except Image.DecompressionBombError:  # above 2 * Image.MAX_IMAGE_PIXELS, far above MAX_PIXELS
        skipped[too_large] += 1
        return False
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        skipped['not decodable'] += 1
        return False
    with opened:
        image.width, image.height = opened.size
        if image.width * image.height > MAX_PIXELS:
            skipped[too_large] += 1
            return False
        if max(image.width, image.height) < MIN_LONGER_SIDE:
            skipped[f'smaller than {MIN_LONGER_SIDE} px'] += 1
            return False
        try:
            opened.load()
        except (OSError, SyntaxError, ValueError):
            skipped['not decodable'] += 1
            return False
        image.has_alpha = _has_alpha(opened)
        if image.has_alpha:
            alpha = opened.convert('RGBA').getchannel('A')
            image.transparent = alpha.getextrema()[0] < 255
        if opened.format in TF_FORMATS:
            image.extension = TF_FORMATS[opened.format]
            return True
        # Neither copied nor rendered above: a format TensorFlow does not decode -> PNG with alpha.
        image.converted_from = image.converted_from or opened.format or image.path.suffix
        converted = opened.convert('RGBA' if image.has_alpha else 'RGB')
        buffer = io.BytesIO()
        converted.save(buffer, format='PNG', optimize=True)
        image.encoded, image.extension = buffer.getvalue(), '.png'
        return True


# --- the export ----------------------------------------------------------------------------------

def select(images: List[Candidate], max_per_class: Optional[int]) -> List[Candidate]:
    """At most max_per_class images of each class, those with the smallest select key (step 4)."""
    if max_per_class is None:
        return images
    by_label: Dict[str, List[Candidate]] = collections.defaultdict(list)
    for image in images:
        by_label[image.label].append(image)
    chosen = []
    for label in sorted(by_label):
        chosen += sorted(by_label[label], key=lambda image: key(image.digest, 'select'))[:max_per_class]
    return chosen


def file_name(image: Candidate) -> str:
    """The source path without its class folder, flattened, and the start of its hash: unique."""
    stem = Path(image.relative).with_suffix('').as_posix().replace('/', '-')
    return f'{stem}-{image.digest[:8]}{image.extension}'


def _prepare(out: Path) -> None:
    """An empty out; a previous export (only split folders in it) is replaced, nothing else."""
    if out.exists():
        entries = {entry.name for entry in out.iterdir()}
        if not entries <= set(SPLITS):
            raise FileExistsError(f'{out} exists and holds more than {"/, ".join(SPLITS)}/: '
                                  f'not replacing it')
        shutil.rmtree(out)
    out.mkdir(parents=True)


def export(image_set: ImageSet, out: Path, max_per_class: Optional[int] = None) -> Export:
    """Writes out/<split>/<class>/<file> (see the module docstring) and returns what it did."""
    skipped: collections.Counter = collections.Counter()
    candidates, ignored = collect(image_set, skipped)
    readable = [image for image in candidates if read(image, skipped)]
    chosen = select(readable, max_per_class)
    _prepare(out)
    images: Dict[str, List[Candidate]] = {split: [] for split in SPLITS}
    for image in chosen:
        split = split_of(image.digest)
        folder = out / split / image.label
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / file_name(image)
        if image.encoded is None:
            shutil.copyfile(image.path, target)
        else:
            target.write_bytes(image.encoded)
        images[split].append(image)
    return Export(images, dict(skipped), ignored)


def summary(image_set: ImageSet, result: Export) -> str:
    labels = list(image_set.classes)
    lines = [f'{"class":<12}' + ''.join(f'{split:>12}' for split in SPLITS) + f'{"total":>8}'
             f'{"alpha":>8}{"transp.":>9}{"converted":>11}']
    every = [image for split in SPLITS for image in result.images[split]]
    for label in labels + ['all']:
        mine = [image for image in every if label in ('all', image.label)]
        counts = [sum(1 for image in result.images[split] if label in ('all', image.label)) for split in SPLITS]
        lines.append(f'{label:<12}' + ''.join(f'{count:>12}' for count in counts) + f'{len(mine):>8}'
                     f'{sum(i.has_alpha for i in mine):>8}{sum(i.transparent for i in mine):>9}'
                     f'{sum(bool(i.converted_from) for i in mine):>11}')
    lines.append('alpha: has an alpha channel (or a transparent palette colour); transp.: some pixel is '
                 'not opaque; converted: rendered from SVG or converted to PNG')
    if every:
        ratios = sorted(image.width / image.height for image in every)
        square = sum(1 for r in ratios if abs(r - 1) <= 0.05)
        lines.append(f'aspect ratio (width/height): min {ratios[0]:.2f}, median {statistics.median(ratios):.2f}, '
                     f'max {ratios[-1]:.2f}; {sum(r < 0.75 for r in ratios)} taller than 3:4, '
                     f'{sum(r > 4 / 3 for r in ratios)} wider than 4:3, {square} square within 5%')
        sides = sorted(min(image.width, image.height) for image in every)
        longs = sorted(max(image.width, image.height) for image in every)
        lines.append(f'size: shorter side {sides[0]}-{sides[-1]} px (median {statistics.median(sides):g}), '
                     f'longer side {longs[0]}-{longs[-1]} px (median {statistics.median(longs):g})')
        formats = collections.Counter(image.extension for image in every)
        lines.append('files: ' + ', '.join(f'{count} {ext}' for ext, count in sorted(formats.items())))
    missing = [f'{label}/{split}' for label in labels for split in SPLITS
               if not any(image.label == label for image in result.images[split])]
    if missing:
        lines.append(f'WARNING: no image in {", ".join(missing)}')
    lines.append(f'not images, ignored: {result.ignored} files')
    for reason, count in sorted(result.skipped.items()):
        if count:
            lines.append(f'skipped, {reason}: {count}')
    return '\n'.join(lines)


def describe(image_set: ImageSet) -> str:
    versions = ', '.join(f'{p} {package_version(p) or "(not installed)"}' for p in image_set.packages)
    lines = [f'{image_set.name}: {image_set.description}', f'  packages: {versions}',
             f'  licence:  {image_set.licence} (/usr/share/doc/{image_set.packages[0]}/copyright)',
             f'  images:   {image_set.root}',
             f'  default --max-per-class: {image_set.max_per_class or "0 (no limit)"}']
    for label, image_class in image_set.classes.items():
        folders = ', '.join(image_class.sources) + ''.join(f' -{folder}' for folder in image_class.exclude)
        lines.append(f'  {label:<10} {folders}: {image_class.reason}')
    return '\n'.join(lines)


def main(argv: Sequence[str] = None, sets: Dict[str, ImageSet] = None) -> int:
    sets = SETS if sets is None else sets
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('name', nargs='?', choices=sorted(sets))
    parser.add_argument('--out', type=Path, help='folder to write (a previous export there is replaced)')
    parser.add_argument('--max-per-class', type=int, default=None,
                        help="keep at most this many images per class (a deterministic choice); "
                             "default: the set's own (see --list), 0: no limit")
    parser.add_argument('--list', action='store_true', help='describe the sets and exit')
    args = parser.parse_args(argv)
    if args.list:
        print('\n\n'.join(describe(image_set) for image_set in sets.values()))
        return 0
    if not args.name or not args.out:
        parser.error('give a set NAME and --out DIR (or --list)')
    if args.max_per_class is not None and args.max_per_class < 0:
        parser.error('--max-per-class must be 0 (no limit) or more')
    image_set = sets[args.name]
    max_per_class = image_set.max_per_class if args.max_per_class is None else (args.max_per_class or None)
    try:
        ensure_installed(image_set)
        result = export(image_set, args.out, max_per_class)
    except (MissingPackage, FileNotFoundError, FileExistsError, subprocess.CalledProcessError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    versions = ', '.join(f'{p} {package_version(p)}' for p in image_set.packages)
    print(f'{image_set.name} ({versions}; {image_set.licence}) -> {args.out}, '
          f'{f"at most {max_per_class}" if max_per_class else "all"} images per class')
    print(summary(image_set, result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
