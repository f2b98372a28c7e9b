"""How good are the backbone's frozen features? Linear classifiers on GAP features.

    python -m bench.linear_probe [--per-class 200] [--few 20] [--test-per-class 100] [--size 96]

Fashion-MNIST from Debian's `dataset-fashion-mnist` (real photos of 10 kinds of clothing):
`per-class` training images per class from its training set, `test-per-class` from its test
set. Each image is resized as the pipeline's Transform does and passed once through the
frozen MobileNetV2 (alpha 1.0) without its top, then average-pooled. Three classifiers per
backbone variant:

- linear probe: logistic regression on standardised features, `per-class` and `few` images
  per class (standardising is what lets the ~1e-11 features of a random base count at all);
- phase-1 head: what the Trainer's first phase does, a Dense layer trained with Adam at 1e-4
  for 10 epochs (batch 32, dropout 0.2) on the features as the pipeline feeds them: as they
  are for pretrained weights, standardised for `weights: none`.

Writes bench/results/linear_probe.md.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras

from bench.report import write_table
from components.trainer import backbones
from pipeline import fashion_mnist
from pipeline.config import BackboneSpec

def images_and_labels(split: str, per_class: int, size: int):
    images, labels = fashion_mnist.load(split)
    chosen = fashion_mnist.select(labels, fashion_mnist.CLASS_NAMES, per_class)
    index = np.array([i for indices in chosen.values() for i in indices])
    gray = tf.constant(images[index][..., None])
    rgb = tf.image.resize(tf.image.grayscale_to_rgb(gray), [size, size], antialias=True)
    return tf.clip_by_value(rgb, 0, 255).numpy() / 127.5 - 1.0, labels[index]


def features(base, images, batch=100):
    pooled = tf_keras.layers.GlobalAveragePooling2D()
    return np.concatenate([pooled(base(images[i:i + batch], training=False)).numpy()
                           for i in range(0, len(images), batch)])


def _probe(train_f, train_y, test_f, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler().fit(train_f)
    classifier = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(train_f), train_y)
    return float(classifier.score(scaler.transform(test_f), test_y))


def _phase_one_head(train_f, train_y, test_f, test_y, standardise: bool) -> float:
    if standardise:
        mean, std = train_f.mean(axis=0), train_f.std(axis=0)
        std[std == 0] = 1
        train_f, test_f = (train_f - mean) / std, (test_f - mean) / std
    tf_keras.utils.set_random_seed(0)
    head = tf_keras.Sequential([tf_keras.layers.Dropout(0.2), tf_keras.layers.Dense(10)])
    head.compile(tf_keras.optimizers.Adam(1e-4),
                 tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), ['accuracy'])
    head.fit(train_f, train_y, epochs=10, batch_size=32, verbose=0)
    return float(head.evaluate(test_f, test_y, verbose=0)[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--per-class', type=int, default=200)
    parser.add_argument('--few', type=int, default=20, help='images per class for the few-shot probe')
    parser.add_argument('--test-per-class', type=int, default=100)
    parser.add_argument('--size', type=int, default=96)
    args = parser.parse_args(argv)

    train_x, train_y = images_and_labels('train', args.per_class, args.size)
    test_x, test_y = images_and_labels('test', args.test_per_class, args.size)
    variants = [
        ('imagenet-torchvision, torchvision padding', dict(weights='imagenet-torchvision', padding='torchvision')),
        ('imagenet-torchvision, Keras padding', dict(weights='imagenet-torchvision', padding='keras')),
        ('none (random initialisation)', dict(weights='none')),
    ]
    rows = []
    for name, options in variants:
        tf_keras.utils.set_random_seed(0)
        base = backbones.build_base(BackboneSpec(name="mobilenet_v2", image_size=args.size, alpha=1.0, **options))
        started = time.time()
        train_f, test_f = features(base, train_x), features(base, test_x)
        seconds = time.time() - started
        probe = _probe(train_f, train_y, test_f, test_y)
        few = np.concatenate([np.flatnonzero(train_y == c)[:args.few] for c in range(10)])
        probe_few = _probe(train_f[few], train_y[few], test_f, test_y)
        head = _phase_one_head(train_f, train_y, test_f, test_y, standardise=options['weights'] == 'none')
        rows.append((name, probe, probe_few, head, float(np.std(train_f)), seconds))
        print(f'{name}: probe {probe:.4f}, few-shot probe {probe_few:.4f}, phase-1 head {head:.4f} '
              f'(feature std {np.std(train_f):.3g}, {seconds:.0f} s)')
        if options['weights'] == 'none':
            raw_head = _phase_one_head(train_f, train_y, test_f, test_y, standardise=False)
            rows.append((name + ', features not standardised', probe, probe_few, raw_head,
                         float(np.std(train_f)), seconds))
            print(f'{name}, features not standardised: phase-1 head {raw_head:.4f}')

    write_table(
        'linear_probe', 'Linear probe: frozen MobileNetV2 features on Fashion-MNIST',
        f'{len(train_y)} training and {len(test_y)} test images, 10 classes, {args.size} px; test accuracy '
        f'of classifiers on the 1280 GAP features (see the docstring of bench/linear_probe.py).',
        ['backbone weights', f'linear probe, {args.per_class}/class', f'linear probe, {args.few}/class',
         f'phase-1 head, {args.per_class}/class', 'feature std', 'feature time'],
        [[name, f'{probe:.4f}', f'{few:.4f}', f'{head:.4f}', f'{std:.3g}', f'{seconds:.0f} s']
         for name, probe, few, head, std, seconds in rows])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
