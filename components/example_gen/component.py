"""ImageExampleGen: a real folder of images as TFX Examples, with a report of everything it met.

TFX's FileBasedExampleGen with its own driver and executor, so splitting, output format,
caching and ML Metadata behave as for any TFX ExampleGen. Each example holds:

    image_raw       bytes  the encoded image: the file's own bytes, or its one-time conversion
    label           int64  index of the class in the sorted class names
    filename        bytes  path relative to data_root
    content_sha256  bytes  sha256 of the file's bytes (hex)
    class_name      bytes  the class's name (statistics and drift per class)
    image_height, image_width, image_channels, image_format, image_file_bytes,
    image_brightness, image_saturation: what the image looks like (ingestion.image_facts),
                           for StatisticsGen and the data validation; nothing trains on them

Two layouts (ingestion.data_folder):

- class folders `data_root/<class>/**`: one TFX input split; TFX's own hash buckets
  (`output_config`) split it on `content_sha256`, so byte-identical copies always share a
  split and adding images never moves old ones;
- pre-split folders `data_root/<train|validation|val|eval|test>/<class>/**`: one TFX input
  split per folder (`input_config`), used as given.
The executor (executor.py) reads the files; the driver (ingestion.fingerprint) gives the cache
key a fingerprint of the folder tree.
"""
from __future__ import annotations

from typing import List

from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.example_gen.executor import CLASS_FILES_PATTERN, Executor, custom_config
from components.example_gen.ingestion import data_folder
from components.example_gen.ingestion.fingerprint import ImageFolderDriver
from components.example_gen.spec import IngestionConfig, SplitRatios
from components.features import CONTENT_HASH_KEY


def list_class_names(data_root: str, layout: str = 'auto') -> List[str]:
    """The class names ImageExampleGen will find, in label order, reading only the top folders."""
    found = data_folder.detect_layout(data_root, layout)
    split_folders = list(found.split_folders.values()) if found.kind == data_folder.PRE_SPLIT else ['']
    return data_folder.find_class_folders(data_root, split_folders).class_names


def input_config(layout: data_folder.Layout) -> example_gen_pb2.Input:
    """One input split of all class folders, or one per split folder (used as given)."""
    if layout.kind == data_folder.CLASS_FOLDERS:
        return example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name='images', pattern=CLASS_FILES_PATTERN)])
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=split, pattern=f'{folder}/{CLASS_FILES_PATTERN}')
        for split, folder in layout.split_folders.items()])


def output_config(layout: data_folder.Layout, ratios: SplitRatios) -> example_gen_pb2.Output:
    """Hash buckets of the content hash in the given proportions; nothing when the folders are splits."""
    if layout.kind == data_folder.PRE_SPLIT:
        return example_gen_pb2.Output()
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=getattr(ratios, name))
                for name in data_folder.OUTPUT_SPLITS],
        partition_feature_name=CONTENT_HASH_KEY))


class ImageExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen reading image folders, with the tree-fingerprinting driver."""

    DRIVER_CLASS = ImageFolderDriver

    def __init__(self, data_root: str, ingestion: IngestionConfig, code_version: str = ''):
        layout = data_folder.detect_layout(data_root, ingestion.layout)
        super().__init__(
            input_base=data_root,
            input_config=input_config(layout),
            output_config=output_config(layout, ingestion.split_ratios),
            custom_config=custom_config(ingestion, code_version),
            custom_executor_spec=executor_spec.BeamExecutorSpec(Executor))
