"""Is training fed fast enough? The Trainer's input pipeline against in-memory tensors.

    python -m bench.input_pipeline [--quick] [--work DIR]

Uses the examples and transform graph of bench/recipe.py's `fashion_mnist-auto` run (run that first),
so the data is the same 2,000 + 500 Fashion-MNIST images at 160 px. Measures, on the same
classifier (MobileNetV2, imagenet-torchvision, augmentation on, batch 32):

  forward          the frozen backbone alone, inference on in-memory batches (images/s)
  in-memory fit    model.fit on the decoded images as in-memory tensors, frozen phase and
                   fine-tuning phase (training images/s, validation included)
  pipeline fit     the same fits fed by the Trainer's own input pipeline (raw examples ->
                   transform graph -> cache), as run_fn builds it

Writes bench/results/input_pipeline.md and .json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from bench.report import RESULTS_DIR, write_table

REPO = Path(__file__).resolve().parent.parent


def _latest(folder: Path) -> Path:
    return max(folder.iterdir(), key=lambda p: int(p.name))


def _fn_args(pipeline_root: Path, spec_config: dict):
    """The Trainer's FnArgs for the recipe bench's examples and transform graph."""
    from tfx.components.trainer import fn_args_utils
    from tfx.proto import trainer_pb2
    from tfx.types import standard_artifacts
    examples = standard_artifacts.Examples()
    examples.uri = str(_latest(pipeline_root / 'ImageExampleGen' / 'examples'))
    examples.split_names = '["train", "eval", "test"]'
    transform_graph = standard_artifacts.TransformGraph()
    transform_graph.uri = str(_latest(pipeline_root / 'Transform' / 'transform_graph'))
    schema = standard_artifacts.Schema()
    schema.uri = str(_latest(pipeline_root / 'ImportSchemaGen' / 'schema'))
    from tfx.utils import proto_utils
    fn_args = fn_args_utils.get_common_fn_args(
        {'examples': [examples], 'transform_graph': [transform_graph], 'schema': [schema]},
        {'train_args': proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=['train'])),
         'eval_args': proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=['eval'])),
         'custom_config': json.dumps(spec_config)})
    fn_args.transform_output = fn_args.transform_graph_path  # as TFX's Trainer executor sets it
    return fn_args


def _seconds_per_epoch(model, data, epochs, validation) -> float:
    model.fit(data, epochs=1, validation_data=validation, verbose=0)  # tracing, first decode, cache fill
    started = time.time()
    model.fit(data, epochs=epochs, validation_data=validation, verbose=0)
    return (time.time() - started) / epochs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--work', type=Path, default=REPO / 'bench' / '.work' / 'recipe')
    parser.add_argument('--epochs', type=int, default=3)
    args = parser.parse_args(argv)
    from components.trainer import data as data_lib
    from components.trainer import model as model_lib
    from components.trainer import recipe
    from pipeline.config import load_config

    config = load_config(args.work / 'fashion_mnist-auto.yaml')
    # The tutorial's numbers: this measures the input pipeline, not the recipe.
    spec = recipe.resolve(config.training().model_copy(update=dict(recipe='tutorial')))
    pipeline_root = Path(config.pipeline_root)
    fn_args = _fn_args(pipeline_root, spec.model_dump())
    counts = {split: len(data_lib.labels(fn_args, split)) for split in ('train', 'eval', 'test')}
    data = data_lib.TrainerData(fn_args, spec, binary=False, counts=counts)
    train, validation = data.dataset('train', shuffle=True), data.dataset('eval')

    # The same decoded images as tensors in memory.
    arrays = {}
    for split, dataset in (('train', data.dataset('train', cache=False)), ('eval', data.dataset('eval', cache=False))):
        inputs, labels = zip(*[(x['image'].numpy(), y.numpy()) for x, y in dataset])
        arrays[split] = (np.concatenate(inputs), np.concatenate(labels))
    memory_train = tf.data.Dataset.from_tensor_slices(({'image': arrays['train'][0]}, arrays['train'][1])) \
        .shuffle(1024, seed=1).batch(spec.batch_size).prefetch(tf.data.AUTOTUNE)
    memory_validation = tf.data.Dataset.from_tensor_slices(({'image': arrays['eval'][0]}, arrays['eval'][1])) \
        .batch(spec.batch_size)
    images = counts['train']

    classifier = model_lib.build_classifier(spec, 10)
    base = next(iter(classifier.bases.values()))
    # Full batches only (another batch size would trace the function again inside the timing).
    full = len(arrays['train'][0]) // 32 * 32
    batches = [arrays['train'][0][i:i + 32] for i in range(0, min(full, 640), 32)] * (2 if full < 640 else 1)
    forward = tf.function(lambda x: base(x, training=False))
    forward(batches[0]).numpy()
    started = time.time()
    for batch in batches:
        forward(batch).numpy()
    forward_rate = sum(len(b) for b in batches) / (time.time() - started)

    rows, figures = [], {'forward': forward_rate}
    passed = counts['train'] + counts['eval']  # images through the backbone per epoch
    for phase, compile_phase in (('frozen', model_lib.compile_for_head), ('fine-tuning', model_lib.compile_for_fine_tuning)):
        compile_phase(classifier, spec)
        memory = images / _seconds_per_epoch(classifier.model, memory_train, args.epochs, memory_validation)
        compile_phase(classifier, spec)
        epoch_seconds = _seconds_per_epoch(classifier.model, train, args.epochs, validation)
        pipeline, through_backbone = images / epoch_seconds, passed / epoch_seconds
        figures[phase] = {'in_memory': memory, 'pipeline': pipeline, 'through_backbone': through_backbone}
        rows.append([phase, f'{memory:.0f}', f'{pipeline:.0f}', f'{pipeline / memory:.2f}', f'{through_backbone:.0f}',
                     f'{through_backbone / forward_rate:.2f}' if phase == 'frozen' else '-'])
    data.close()
    (RESULTS_DIR / 'input_pipeline.json').write_text(json.dumps(figures, indent=1))
    write_table(
        'input_pipeline', "The Trainer's input pipeline against in-memory tensors",
        f'{images} training and {counts["eval"]} validation images of bench/recipe.py at {spec.backbones[0].image_size} px, '
        f'MobileNetV2 (alpha {spec.backbones[0].alpha}), batch {spec.batch_size}, augmentation on, {args.epochs} '
        f'timed epochs after one warm-up epoch. "img/s" counts training images per second of an epoch, '
        f'validation included; "through the backbone" counts every image the epoch passes through it '
        f'(training and validation), the figure comparable with the frozen backbone\'s inference alone: '
        f'{forward_rate:.0f} images/s (batch 32, in-memory tensors). Training also augments, runs the head '
        f'and its gradients, so 1.0 is out of reach.',
        ['phase', 'in-memory tensors img/s', 'Trainer input pipeline img/s', 'ratio',
         'Trainer: images through the backbone/s', 'ratio to the backbone\'s inference'], rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
