"""GAP, max pooling or Flatten after a frozen MobileNetV2? Measured on real data.

    python -m bench.heads [--per-class 200] [--test-per-class 100] [--size 224] [--epochs 10]

The question users ask (see README, "Which head do I need?"): after MobileNetV2 without its
top (7 x 7 x 1280 at 224 px), pool with GlobalAveragePooling2D or Flatten the 62,720 values
into the Dense layer? Fashion-MNIST from Debian's `dataset-fashion-mnist`, 10 classes, with
the pretrained backbone (imagenet-torchvision) frozen as in the pipeline's first phase. The
backbone's feature maps are computed once; then each head (pooling -> Dropout(0.2) ->
Dense(10)) is trained with Adam for `epochs` epochs at several learning rates (the pipeline's
default 1e-4, 10x lower, and 10x and 100x higher) and scored on the held-out test images. Writes bench/results/heads.md.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras

from bench.linear_probe import images_and_labels
from bench.report import write_table
from components.trainer import backbones
from components.trainer.model import _POOLING
from pipeline.config import BackboneSpec

def feature_maps(base, images, batch=50):
    return np.concatenate([base(images[i:i + batch], training=False).numpy()
                           for i in range(0, len(images), batch)])


def train_head(pooling: str, train, test, learning_rate: float, epochs: int, seed: int = 0):
    tf_keras.utils.set_random_seed(seed)
    head = tf_keras.Sequential([
        tf_keras.Input(train[0].shape[1:]),
        _POOLING[pooling](),
        tf_keras.layers.Dropout(0.2, seed=seed),
        tf_keras.layers.Dense(10),
    ])
    head.compile(tf_keras.optimizers.Adam(learning_rate),
                 tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), ['accuracy'])
    history = head.fit(*train, validation_data=test, epochs=epochs, batch_size=32, verbose=0)
    return history.history['val_accuracy'][-1], max(history.history['val_loss']), head.count_params()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--per-class', type=int, default=200)
    parser.add_argument('--test-per-class', type=int, default=100)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--learning-rates', type=float, nargs='+', default=[1e-2, 1e-3, 1e-4, 1e-5],
                        help='the pipeline default is 1e-4; 1e-5 is 10x lower, 1e-2/1e-3 show where flatten breaks')
    args = parser.parse_args(argv)

    train_x, train_y = images_and_labels('train', args.per_class, args.size)
    test_x, test_y = images_and_labels('test', args.test_per_class, args.size)
    base = backbones.build_base(BackboneSpec(name='mobilenet_v2', image_size=args.size,
                                             weights='imagenet-torchvision'))
    started = time.time()
    train_maps, test_maps = feature_maps(base, train_x), feature_maps(base, test_x)
    print(f'feature maps {train_maps.shape[1:]} of {len(train_x) + len(test_x)} images in {time.time() - started:.0f} s')

    rows = []
    for pooling in ('gap', 'max', 'flatten'):
        for learning_rate in args.learning_rates:
            accuracy, worst_loss, params = train_head(pooling, (train_maps, train_y), (test_maps, test_y),
                                                      learning_rate, args.epochs)
            rows.append((pooling, learning_rate, accuracy, worst_loss, params))
            print(f'{pooling:>7} lr {learning_rate:g}: test accuracy {accuracy:.4f} '
                  f'(highest test loss {worst_loss:.2f}, {params:,} parameters)')

    shape = ' x '.join(str(d) for d in train_maps.shape[1:])
    write_table(
        'heads', 'GAP vs max pooling vs Flatten after a frozen MobileNetV2',
        f'Fashion-MNIST, 10 classes, {len(train_y)} training and {len(test_y)} test images, MobileNetV2 '
        f'(alpha 1.0, imagenet-torchvision weights, frozen) at {args.size} px: feature maps of {shape}. '
        f'Head: pooling -> Dropout(0.2) -> Dense(10), Adam, batch 32, {args.epochs} epochs.',
        ['head', 'learning rate', 'test accuracy', 'highest test loss', 'head parameters'],
        [[pooling, f'{lr:g}', f'{accuracy:.4f}', f'{loss:.2f}', f'{params:,}']
         for pooling, lr, accuracy, loss, params in rows])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
