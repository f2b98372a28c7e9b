"""What phase 2 saves by computing each backbone's frozen bottom once (components/trainer/frozen_bottom.py).

    python -m bench.frozen_bottom [--size 160] [--train 320] [--validation 96] [--epochs 3]

MobileNetV2 (alpha 1.0) at `size` px with the default fine_tune_at (100), cut where
frozen_bottom cuts it; random images and weights (the time does not depend on them). Measures
a forward pass of a batch of 32 through the whole backbone and through its frozen bottom,
then phase 2's epochs (SGD, the recipe's compile, `train` images, validation on
`validation`) on the images and above the bottoms' outputs: the median epoch after the
first (which traces the graphs). Writes bench/results/frozen_bottom.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras

from bench.report import write_table
from components.trainer import data as data_lib
from components.trainer import model as model_lib
from components.trainer.frozen_bottom import FrozenBottom
from components.trainer.spec import BackboneSpec, TrainingSpec


class _EpochTimes(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def _forward_ms(function, batch, repeats: int = 10) -> float:
    function(batch)
    started = time.perf_counter()
    for _ in range(repeats):
        function(batch)
    return (time.perf_counter() - started) / repeats * 1000


def _epoch_seconds(model, train, validation, epochs: int) -> float:
    times = _EpochTimes()
    model.fit(train, validation_data=validation, epochs=epochs, verbose=0, callbacks=[times])
    return statistics.median(times.seconds[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=160)
    parser.add_argument('--train', type=int, default=320)
    parser.add_argument('--validation', type=int, default=96)
    parser.add_argument('--epochs', type=int, default=3)
    args = parser.parse_args(argv)
    spec = TrainingSpec(backbones=[BackboneSpec(name='mobilenet_v2', image_size=args.size, weights='none')],
                        recipe='tutorial', augmentation=False, learning_rate=1e-3, dropout=0.2, head_l2=0.0,
                        head_epochs=1, fine_tune_epochs=args.epochs, fine_tune_optimizer='sgd',
                        fine_tune_schedule='constant', fine_tune_warmup_epochs=0, head_on_features=True,
                        early_stopping_metric='val_accuracy')
    rng = np.random.default_rng(0)
    splits = {split: (rng.uniform(-1, 1, (n, args.size, args.size, 3)).astype(np.float32), rng.integers(0, 6, n))
              for split, n in (('train', args.train), ('eval', args.validation))}
    classifier = model_lib.build_classifier(spec, 6)
    bottom = FrozenBottom.plan(spec, classifier.bases, images=args.train + args.validation)
    extractor = bottom.extractor()
    for split, (images, labels) in splits.items():
        outputs = [extractor({'image': images[i:i + 32]}, training=False)[1:] for i in range(0, len(labels), 32)]
        bottom.add(split, [np.concatenate([o[0].numpy() for o in outputs])], labels)

    base = classifier.bases['image']
    bottom_model = extractor.get_layer(f'{base.name}_frozen_bottom')
    batch = tf.constant(splits['train'][0][:32])
    full_ms = _forward_ms(tf.function(lambda x: base(x, training=False)), batch)
    bottom_ms = _forward_ms(tf.function(lambda x: bottom_model(x, training=False)), batch)

    def images(split, shuffle=False):
        pixels, labels = splits[split]
        return data_lib.batched(tf.data.Dataset.from_tensor_slices(({'image': pixels}, labels)), spec, len(labels),
                                shuffle).cache()

    model_lib.compile_for_fine_tuning(classifier, spec)
    on_images = _epoch_seconds(classifier.model, images('train', True), images('eval'), args.epochs)
    above = bottom.model(classifier)
    model_lib.compile_for_fine_tuning(classifier, spec, model=above)
    on_bottoms = _epoch_seconds(above, bottom.dataset('train', shuffle=True), bottom.dataset('eval'), args.epochs)
    write_table(
        'frozen_bottom', 'Phase 2 above the frozen bottom, computed once, against phase 2 on the images',
        f'MobileNetV2 (alpha 1.0, random weights and images) at {args.size} px, fine_tune_at 100 (cut at layer 98, see '
        f'components/trainer/frozen_bottom.py); '
        f'{args.train} training and {args.validation} validation images in memory, batch 32; forward times per '
        f'batch of 32 (inference mode, as a graph); epoch times: median of epochs 2 to {args.epochs}.',
        ['measure', 'whole backbone / on the images', 'frozen bottom / above it', 'share'],
        [['forward pass, batch of 32', f'{full_ms:.0f} ms', f'{bottom_ms:.0f} ms', f'{bottom_ms / full_ms:.0%}'],
         ['phase 2 epoch (train + validation)', f'{on_images:.2f} s', f'{on_bottoms:.2f} s',
          f'{on_bottoms / on_images:.0%}']])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
