"""The plain tf.keras script of TensorFlow's transfer-learning tutorial, as users copy it.

    python -m bench.plain_keras DATA_DIR OUT.json [--weights FILE] [--size 160] [--epochs 10 10]

DATA_DIR holds train/, validation/ and test/ folders of class folders. The recipe, step by
step as in the tutorial: image_dataset_from_directory at 160 px, batch 32; RandomFlip and
RandomRotation(0.2); mobilenet_v2.preprocess_input; a frozen MobileNetV2 called with
training=False; GlobalAveragePooling2D, Dropout(0.2), Dense logits; Adam 1e-4 for 10 epochs;
then layers from 100 on unfrozen, RMSprop 1e-5, 10 more epochs. Writes test accuracy after
each phase and the time each phase took.
"""
import argparse
import json
import os
import time

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from components import keras_setup  # noqa: E402  (the same AutoGraph fix the pipeline gets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data_dir')
    parser.add_argument('out')
    parser.add_argument('--weights', required=True, help='MobileNetV2 no-top weights file')
    parser.add_argument('--size', type=int, default=160)
    parser.add_argument('--epochs', type=int, nargs=2, default=[10, 10])
    parser.add_argument('--seed', type=int, default=42)
    args = parser.parse_args()
    keras_setup.use_tf_keras()
    tf_keras.utils.set_random_seed(args.seed)
    size = (args.size, args.size)

    def load(split, shuffle):
        return tf_keras.utils.image_dataset_from_directory(
            os.path.join(args.data_dir, split), shuffle=shuffle, batch_size=32, image_size=size,
            seed=args.seed).prefetch(tf.data.AUTOTUNE)

    train, validation, test = load('train', True), load('validation', False), load('test', False)
    classes = len(train.class_names) if hasattr(train, 'class_names') else 10
    augmentation = tf_keras.Sequential([tf_keras.layers.RandomFlip('horizontal'),
                                        tf_keras.layers.RandomRotation(0.2)])
    base = tf_keras.applications.MobileNetV2(input_shape=size + (3,), include_top=False, weights=None)
    base.load_weights(args.weights)
    base.trainable = False
    inputs = tf_keras.Input(shape=size + (3,))
    x = augmentation(inputs)
    x = tf_keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    x = tf_keras.layers.Dropout(0.2)(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(classes)(x))
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    result = {}
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss=loss, metrics=['accuracy'])
    started = time.time()
    model.fit(train, epochs=args.epochs[0], validation_data=validation, verbose=2)
    result['head_seconds'] = time.time() - started
    result['head_test_accuracy'] = model.evaluate(test, verbose=0)[1]

    base.trainable = True
    for layer in base.layers[:100]:
        layer.trainable = False
    model.compile(optimizer=tf_keras.optimizers.RMSprop(1e-5), loss=loss, metrics=['accuracy'])
    started = time.time()
    model.fit(train, epochs=sum(args.epochs), initial_epoch=args.epochs[0], validation_data=validation, verbose=2)
    result['fine_tune_seconds'] = time.time() - started
    result['fine_tune_test_accuracy'] = model.evaluate(test, verbose=0)[1]
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
