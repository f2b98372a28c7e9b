"""Which optimizer, learning rate and schedule should fine-tuning use once the head has converged?

    python -m bench.fine_tune_schedule [--per-class 100] [--size 160] [--epochs 8] [--augmentation flip]
    python -m bench.fine_tune_schedule --data DIR [...]   # a pre-split folder (bench/datasets.py)

`recipe: auto` trains the head to convergence on frozen features before it fine-tunes, so
the tutorial's fine-tuning numbers (RMSprop at 1e-5, constant, chosen to follow an
under-trained head) are not obviously right for it. This benchmark takes real data
(Fashion-MNIST from Debian's `dataset-fashion-mnist`: `per-class` training, a quarter of that
validation images per class from its training set, half of it test images from its test
set; or --data, a pre-split folder of train/, validation/ and test/, decoded as Transform does
with transparency on white), trains the head as `auto` does (Adam, early stopping on validation loss, best weights),
then fine-tunes MobileNetV2 (imagenet-torchvision, layers 100+, BatchNorm in inference mode,
with --augmentation: the tutorial's flips and rotations of 0.2, flips alone, or none) from
the same head with each variant below, and reports for
each epoch the validation loss, and the test accuracy at the epoch of the best validation
loss (which is what early stopping with restored weights keeps).

Writes bench/results/fine_tune_schedule.md (fine_tune_schedule-<augmentation>.md for another
augmentation than the tutorial's).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras

from bench.report import write_table
from components.trainer import backbones
from components.trainer.spec import BackboneSpec
from pipeline import fashion_mnist

# (name, optimizer, peak learning rate, warm-up epochs, decay); sgd has momentum 0.9.
VARIANTS = (
    ('RMSprop constant 1e-5 (the tutorial)', 'rmsprop', 1e-5, 0, 'constant'),
    ('RMSprop constant 3e-5', 'rmsprop', 3e-5, 0, 'constant'),
    ('RMSprop warm-up 1 epoch + cosine, peak 3e-5', 'rmsprop', 3e-5, 1, 'cosine'),
    ('RMSprop warm-up 1 epoch + cosine, peak 1e-4', 'rmsprop', 1e-4, 1, 'cosine'),
    ('Adam constant 1e-5', 'adam', 1e-5, 0, 'constant'),
    ('SGD warm-up 1 epoch + cosine, peak 1e-3 (auto)', 'sgd', 1e-3, 1, 'cosine'),
)
OPTIMIZERS = {'rmsprop': tf_keras.optimizers.RMSprop, 'adam': tf_keras.optimizers.Adam,
              'sgd': lambda rate: tf_keras.optimizers.SGD(rate, momentum=0.9)}


def images_and_labels(split: str, per_class: int, size: int, skip: int = 0):
    images, labels = fashion_mnist.load(split)
    chosen = fashion_mnist.select(labels, fashion_mnist.CLASS_NAMES, per_class, skip)
    index = np.array([i for indices in chosen.values() for i in indices])
    rgb = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(images[index][..., None])), [size, size],
                          antialias=True)
    return tf.clip_by_value(rgb, 0, 255).numpy() / 127.5 - 1.0, labels[index].astype(np.int64)


def folder_images(root, size: int):
    """{split: (images in [-1, 1], labels)} of a pre-split folder, decoded as Transform does
    (transparency on white, squashed to size)."""
    from pathlib import Path
    from components.transform.image_decoding import decode_image
    root = Path(root)
    classes = sorted(p.name for p in (root / 'train').iterdir() if p.is_dir())
    splits = {}
    for split in ('train', 'validation', 'test'):
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in sorted((root / split / name).iterdir()):
                images.append(decode_image(tf.io.read_file(str(path)), size, (255.0, 255.0, 255.0), 'squash').numpy())
                labels.append(label)
        splits[split] = (np.stack(images) / 127.5 - 1.0, np.array(labels, np.int64))
    return splits, classes


def schedule(peak: float, warmup_epochs: int, decay: str, steps_per_epoch: int, epochs: int):
    if decay == 'constant':
        return peak
    warmup = warmup_epochs * steps_per_epoch
    return tf_keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak, decay_steps=epochs * steps_per_epoch - warmup,
        warmup_target=peak if warmup else None, warmup_steps=warmup)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--per-class', type=int, default=100)
    parser.add_argument('--size', type=int, default=160)
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--augmentation', choices=('tutorial', 'flip', 'none'), default='tutorial')
    parser.add_argument('--data', help='a pre-split image folder instead of Fashion-MNIST')
    args = parser.parse_args(argv)
    size = args.size
    if args.data:
        from pathlib import Path
        splits, names = folder_images(args.data, size)
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits['train'], splits['validation'], splits['test']
        classes, source = len(names), f'{Path(args.data).name} ({args.data})'
    else:
        classes, source = len(fashion_mnist.CLASS_NAMES), 'Fashion-MNIST'
        train_x, train_y = images_and_labels('train', args.per_class, size)
        val_x, val_y = images_and_labels('train', args.per_class // 4, size, skip=args.per_class)
        test_x, test_y = images_and_labels('test', args.per_class // 2, size)

    tf_keras.utils.set_random_seed(0)
    base = backbones.build_base(BackboneSpec(name='mobilenet_v2', image_size=size, weights='imagenet-torchvision'))
    base.trainable = False
    inputs = tf_keras.Input((size, size, 3))
    layers = {'tutorial': [tf_keras.layers.RandomFlip('horizontal'), tf_keras.layers.RandomRotation(0.2)],
              'flip': [tf_keras.layers.RandomFlip('horizontal')], 'none': []}[args.augmentation]
    augmented = tf_keras.Sequential(layers)(inputs) if layers else inputs
    pooled = tf_keras.layers.GlobalAveragePooling2D()(base(augmented, training=False))
    features = tf_keras.Model(inputs, pooled)
    head = tf_keras.Sequential([tf_keras.layers.Dropout(0.2), tf_keras.layers.Dense(classes)])
    model = tf_keras.Model(inputs, head(pooled))
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    started = time.time()
    train_f = features.predict(train_x, batch_size=64, verbose=0)
    val_f = features.predict(val_x, batch_size=64, verbose=0)
    head.compile(tf_keras.optimizers.Adam(1e-3), loss, ['accuracy'])
    head.fit(train_f, train_y, validation_data=(val_f, val_y), epochs=200, batch_size=args.batch_size, verbose=0,
             callbacks=[tf_keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)])
    model.compile(loss=loss, metrics=['accuracy'])
    head_val = model.evaluate(val_x, val_y, verbose=0)
    head_test = model.evaluate(test_x, test_y, verbose=0)[1]
    print(f'head: val loss {head_val[0]:.4f} acc {head_val[1]:.4f}, test acc {head_test:.4f} '
          f'({time.time() - started:.0f} s)', flush=True)
    trained_head = head.get_weights()

    base.trainable = True
    for layer in base.layers[:100]:
        layer.trainable = False
    start_weights = model.get_weights()
    steps = math.ceil(len(train_x) / args.batch_size)
    rows = [['head only (start of every variant)', f'{head_val[0]:.4f}', f'{head_val[1]:.4f}', '-', f'{head_test:.4f}',
             f'{head_test:.4f}', '-', '-', '-']]
    for name, optimizer, peak, warmup, decay in VARIANTS:
        tf_keras.utils.set_random_seed(1)
        model.set_weights(start_weights)
        model.compile(OPTIMIZERS[optimizer](schedule(peak, warmup, decay, steps, args.epochs)), loss, ['accuracy'])
        val_losses, val_accuracies, tests = [], [], []
        started = time.time()
        for epoch in range(args.epochs):
            model.fit(train_x, train_y, batch_size=args.batch_size, initial_epoch=epoch, epochs=epoch + 1,
                      verbose=0, shuffle=True)
            val_loss, val_accuracy = model.evaluate(val_x, val_y, verbose=0)
            val_losses.append(val_loss)
            val_accuracies.append(val_accuracy)
            tests.append(model.evaluate(test_x, test_y, verbose=0)[1])
        best = int(np.argmin(val_losses))
        kept = tests[best] if val_losses[best] < head_val[0] else head_test
        # By accuracy, ties broken by the loss, the head-only model competing (recipe auto's rule).
        by_accuracy = max(range(len(tests)), key=lambda i: (val_accuracies[i], -val_losses[i]))
        kept_accuracy = tests[by_accuracy] if (val_accuracies[by_accuracy], -val_losses[by_accuracy]) > (
            head_val[1], -head_val[0]) else head_test
        print(f'{name}: val losses {[round(v, 4) for v in val_losses]}, val accuracies '
              f'{[round(v, 4) for v in val_accuracies]}, tests {[round(t, 4) for t in tests]}, kept by loss '
              f'{kept:.4f}, by accuracy {kept_accuracy:.4f} ({time.time() - started:.0f} s)', flush=True)
        rows.append([name, f'{min(val_losses):.4f}', f'{max(val_accuracies):.4f}', str(best + 1), f'{kept:.4f}',
                     f'{kept_accuracy:.4f}', f'{tests[-1]:.4f}', ' '.join(f'{v:.3f}' for v in val_losses),
                     ' '.join(f'{v:.3f}' for v in val_accuracies)])
    model.set_weights(start_weights)

    from pathlib import Path
    suffix = ('' if args.augmentation == 'tutorial' else f'-{args.augmentation}') + (
        f'-{Path(args.data).name}' if args.data else '')
    write_table(
        'fine_tune_schedule' + suffix, 'Fine-tuning after a converged head: learning rate and schedule',
        f'{source}, {len(train_y)} training, {len(val_y)} validation and {len(test_y)} test images, '
        f'{size} px, MobileNetV2 imagenet-torchvision from layer 100, batch {args.batch_size}, '
        f'{args.epochs} epochs, augmentation: {args.augmentation}. "kept by loss" is the test accuracy of the '
        f'weights early stopping on validation loss keeps: the epoch of the lowest validation loss, or the head '
        f'alone if no epoch beat it; "kept by accuracy" the same by validation accuracy, ties broken by the '
        f'loss (recipe auto\'s rule).',
        ['variant', 'best val loss', 'best val acc.', 'epoch of best loss', 'test acc. kept by loss',
         'test acc. kept by accuracy', 'test acc. last epoch', 'val loss by epoch', 'val acc. by epoch'],
        rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
