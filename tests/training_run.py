"""A small two-phase training run, in a process of its own (see test_training.py).

    python tests/training_run.py CHECKPOINT_DIR HISTORY_JSON [--slow] [--deterministic]

--slow sleeps after every epoch so the test can kill the process mid-training.
"""
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from components.trainer import model as model_lib  # noqa: E402
from components.trainer import training
from conftest import backbone_spec, training_spec  # noqa: E402


class _Slow(tf_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(1.5)


def main():
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    checkpoint_dir, history_path = sys.argv[1], sys.argv[2]
    spec = training_spec([backbone_spec(image_size=32, fine_tune_at=140)], head_epochs=2, fine_tune_epochs=3,
                         batch_size=8, learning_rate=1e-3, deterministic='--deterministic' in sys.argv)
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf_keras.utils.set_random_seed(spec.seed)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (48, 32, 32, 3)).astype(np.float32)
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (images[:, 0, 0, 1] > 0)
    data = tf.data.Dataset.from_tensor_slices(({'image': images}, labels)).batch(8)
    classifier = model_lib.build_classifier(spec, 3)
    state = training.train_two_phases(
        classifier, spec, data, data, training.TrainingCheckpoint(checkpoint_dir),
        callbacks=[_Slow()] if '--slow' in sys.argv else [])
    with open(history_path, 'w') as f:
        json.dump({'history': state.history, 'resumed_from_epoch': state.resumed_from_epoch,
                   'fine_tune_start_epoch': state.fine_tune_start_epoch,
                   'completed_phases': state.completed_phases}, f)


if __name__ == '__main__':
    main()
