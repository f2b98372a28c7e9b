"""Class names travel with the data: ImageExampleGen writes them next to the examples.

Labels in the tf.Examples are indices into the sorted class names. The names are stored in
the Examples artifact (a JSON file at its root and a custom property), so a model is always
paired with the names of the data it was trained on, even if data_root changes later.
"""
import json
import os
from typing import List, Sequence

import tensorflow as tf

FILE_NAME = 'class_names.json'
PROPERTY_NAME = 'class_names'


def write(examples_uri: str, class_names: Sequence[str]) -> str:
    path = os.path.join(examples_uri, FILE_NAME)
    with tf.io.gfile.GFile(path, 'w') as f:
        json.dump(list(class_names), f, indent=1)
    return path


def read(examples_uri: str) -> List[str]:
    path = os.path.join(examples_uri, FILE_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f'{path} is missing: these examples were not produced by ImageExampleGen, '
            f'which records the class names next to the data.')
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def examples_uri_of_split_files(split_files: str) -> str:
    """`<examples uri>/Split-train/*` (what a Trainer receives) -> `<examples uri>`."""
    return os.path.dirname(os.path.dirname(split_files.rstrip('/')))
