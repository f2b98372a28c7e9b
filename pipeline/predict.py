"""Classifies image files with a pushed model.

    python -m pipeline.predict --model DIR|FILE.tflite [--top-k K] [--json] FILES_OR_FOLDERS...

DIR is the serving directory (the newest numbered version is used) or one SavedModel. A
.tflite file (serving/<version>/tflite/<variant>.tflite) is run with the TFLite interpreter:
images are decoded, composited and made square here as model_info.json beside it says (as the
SavedModel does inside), and its classes are that file's.
Folders are searched recursively for image files. A file that cannot be read or decoded is
reported and skipped; the exit status is 1 if any file failed, 0 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
_BATCH = 32


@dataclasses.dataclass
class Prediction:
    file: str
    top: List[tuple] = dataclasses.field(default_factory=list)  # (class name, probability)
    error: Optional[str] = None


def resolve_model_dir(model: str) -> Path:
    """A SavedModel folder, or the newest numeric version inside a serving directory."""
    path = Path(model)
    if (path / 'saved_model.pb').exists():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / 'saved_model.pb').exists()] \
        if path.is_dir() else []
    if not versions:
        raise FileNotFoundError(f'{model} is neither a SavedModel nor a folder of numbered model versions')
    return max(versions, key=lambda p: int(p.name))


def resolve_model(model: str) -> Path:
    """A .tflite file as it is, else resolve_model_dir."""
    path = Path(model)
    if path.suffix == '.tflite':
        if not path.is_file():
            raise FileNotFoundError(f'{model} does not exist')
        return path
    return resolve_model_dir(model)


def expand_inputs(inputs: Iterable[str]) -> List[Path]:
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob('*')
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            files.append(path)
    return files


class Classifier:
    """The pushed model's serving_default signature: raw bytes in, probabilities and names out."""

    def __init__(self, model_dir: Path):
        import tensorflow as tf
        self._tf = tf
        loaded = tf.saved_model.load(str(model_dir))
        self._loaded = loaded  # keep the object graph alive
        self._serve = loaded.signatures['serving_default']
        self.class_names = [name.decode() for name in loaded.class_names.numpy()]

    def probabilities(self, encoded: List[bytes]):
        outputs = self._serve(image_bytes=self._tf.constant(encoded, dtype=self._tf.string))
        return outputs['probabilities'].numpy()


class TFLiteClassifier:
    """A .tflite variant: each image decoded as the pipeline decodes it, then the interpreter."""

    def __init__(self, model_file: Path):
        from components.tflite.export import read_model_info
        from components.tflite.interpreter import TFLiteModel
        info = read_model_info(str(model_file))
        self._model = TFLiteModel(model_path=str(model_file), num_threads=None)
        self.class_names = list(info['class_names'])
        self._background = tuple(float(c) for c in info['background'])
        self._resize = info['resize']

    def probabilities(self, encoded: List[bytes]):
        import numpy as np
        import tensorflow as tf
        from components.transform.image_decoding import decode_image
        pixels = np.stack([decode_image(tf.constant(data), self._model.image_size, self._background,
                                        self._resize).numpy() for data in encoded])
        return self._model.probabilities(pixels)


def predict(classifier: Classifier, files: Sequence[Path], top_k: int) -> List[Prediction]:
    """Batches files through the model; a batch that fails is retried file by file."""
    import tensorflow as tf
    from components.transform.image_decoding import decode_error_reason
    results: List[Prediction] = []
    for start in range(0, len(files), _BATCH):
        batch = [Prediction(str(path)) for path in files[start:start + _BATCH]]
        readable = []
        for prediction in batch:
            try:
                readable.append((prediction, Path(prediction.file).read_bytes()))
            except OSError as error:
                prediction.error = f'unreadable: {error.strerror or error}'
        try:
            _fill(classifier, readable, top_k)
        except tf.errors.InvalidArgumentError:
            for prediction, data in readable:
                try:
                    _fill(classifier, [(prediction, data)], top_k)
                except tf.errors.InvalidArgumentError as error:
                    prediction.error = f'not a decodable image: {decode_error_reason(error.message)}'
        results.extend(batch)
    return results


def _fill(classifier: Classifier, items, top_k: int) -> None:
    if not items:
        return
    probabilities = classifier.probabilities([data for _, data in items])
    for (prediction, _), probs in zip(items, probabilities, strict=True):
        order = probs.argsort()[::-1][:top_k]
        prediction.top = [(classifier.class_names[i], float(probs[i])) for i in order]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', required=True, help='serving directory, SavedModel folder or .tflite file')
    parser.add_argument('--top-k', type=int, default=1, help='classes to show per image (default 1)')
    parser.add_argument('--json', action='store_true', help='print one JSON document')
    parser.add_argument('inputs', nargs='+', metavar='FILES_OR_FOLDERS')
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error('--top-k must be at least 1')
    try:
        model_dir = resolve_model(args.model)
        files = expand_inputs(args.inputs)
        if not files:
            print('error: no image files found in ' + ' '.join(args.inputs), file=sys.stderr)
            return 2
        classifier = TFLiteClassifier(model_dir) if model_dir.suffix == '.tflite' else Classifier(model_dir)
    except (FileNotFoundError, NotADirectoryError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    results = predict(classifier, files, args.top_k)
    if args.json:
        print(json.dumps({'model': str(model_dir), 'predictions': [
            {'file': r.file, 'error': r.error} if r.error else
            {'file': r.file, 'top': [{'class': c, 'probability': p} for c, p in r.top]}
            for r in results]}, indent=1))
    else:
        print(f'model: {model_dir}')
        width = max(len(r.file) for r in results)
        for r in results:
            shown = f'ERROR {r.error}' if r.error else ', '.join(f'{c} {p:.3f}' for c, p in r.top)
            print(f'{r.file.ljust(width)}  {shown}')
    return 1 if any(r.error for r in results) else 0


if __name__ == '__main__':
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
    sys.exit(main())
