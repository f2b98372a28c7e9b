"""ImageExampleGen's executor: lists, reads and checks the image files in Beam, writes tf.Examples.

Files are listed, read and checked in Beam: outside Beam, the executor lists only the top one
or two levels of folders (and the driver, ingestion.fingerprint, only stats every file for the
cache key, keeping nothing). Every file that does not become an example is reported with its
reason (ingestion.skips), never passed on to crash Transform; images TensorFlow cannot decode
are converted once (ingestion.inspection). The class names and the report (ingestion.report)
are written next to the examples.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen import base_example_gen_executor, write_split
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.example_gen import class_names as class_names_lib
from components.example_gen.ingestion import IngestionError, data_folder, inspection
from components.example_gen.ingestion import report as report_lib
from components.example_gen.ingestion import skips
from components.example_gen.spec import ImageReadingConfig
from components.example_gen.ingestion.image_facts import ImageFacts
from components.features import (CLASS_NAME_KEY, CONTENT_HASH_KEY, FILENAME_KEY, IMAGE_BRIGHTNESS_KEY,
                                 IMAGE_CHANNELS_KEY, IMAGE_FILE_BYTES_KEY, IMAGE_FORMAT_KEY, IMAGE_HEIGHT_KEY,
                                 IMAGE_KEY, IMAGE_SATURATION_KEY, IMAGE_WIDTH_KEY, LABEL_KEY)

logger = logging.getLogger(__name__)

REPORT_FILE = report_lib.REPORT_FILE
# The input pattern of the files of every class folder below a split folder ('' for data_root).
CLASS_FILES_PATTERN = '*/*'

# exec_properties the executor adds for its own Beam transforms.
_CLASS_FOLDERS = '_class_folders'
_CLASS_NAMES = '_class_names'
_READING = '_reading'
_REPORT_DIR = '_report_dir'
_SKIPPED = 'skipped'
_CONVERTED = 'converted'
# Hash buckets that put the files in a mixed order before reading (see _InPathHashOrder).
_ORDER_BUCKETS = 16


def split_folder_of(pattern: str) -> str:
    """The split folder an input pattern reads: '' for `*/*`, 'val' for `val/*/*`."""
    return pattern[:-len(CLASS_FILES_PATTERN)].rstrip('/')


class _ListClassFolder(beam.DoFn):
    """(label, class folder) -> (label, image path), or a tagged skip; a stream, folder by folder."""

    def __init__(self, data_root: str):
        self._data_root = data_root

    def process(self, item: Tuple[int, str]):
        label, folder = item
        for found in data_folder.walk(self._data_root, folder):
            if isinstance(found, skips.Skip):
                yield beam.pvalue.TaggedOutput(_SKIPPED, found.to_json())
            else:
                yield label, found


class _ReadImage(beam.DoFn):
    """(label, image path) -> tf.Example, or a tagged skip; conversions are tagged too."""

    def __init__(self, data_root: str, reading: Dict[str, Any], class_names: List[str]):
        self._data_root = data_root
        self._reading = ImageReadingConfig(**reading)
        self._class_names = class_names

    def process(self, item: Tuple[int, str]):
        label, relative = item
        try:
            data = data_folder.read_bytes(self._data_root, relative)
        except (OSError, tf.errors.OpError) as error:
            detail = getattr(error, 'strerror', None) or getattr(error, 'message', None) or str(error)
            yield beam.pvalue.TaggedOutput(_SKIPPED, skips.Skip(relative, skips.UNREADABLE, detail).to_json())
            return
        outcome = inspection.inspect(data, self._reading.max_image_pixels, self._reading.apply_exif_orientation)
        if isinstance(outcome, inspection.Refused):
            yield beam.pvalue.TaggedOutput(_SKIPPED, skips.Skip(relative, outcome.reason, outcome.detail).to_json())
            return
        if outcome.conversion:
            yield beam.pvalue.TaggedOutput(_CONVERTED, {'file': relative, 'conversion': outcome.conversion})
        yield image_example(outcome.encoded, label, self._class_names[label], relative,
                            hashlib.sha256(data).hexdigest(), outcome.facts)


def image_example(encoded: bytes, label: int, class_name: str, relative: str, content_hash: str,
                  facts: ImageFacts) -> tf.train.Example:
    """The tf.Example of one ingested image (component.py lists its features)."""
    def bytes_feature(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    def float_feature(value: float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_KEY: bytes_feature(encoded),
        LABEL_KEY: int_feature(label),
        CLASS_NAME_KEY: bytes_feature(class_name.encode()),
        FILENAME_KEY: bytes_feature(relative.encode()),
        CONTENT_HASH_KEY: bytes_feature(content_hash.encode()),
        IMAGE_HEIGHT_KEY: int_feature(facts.height),
        IMAGE_WIDTH_KEY: int_feature(facts.width),
        IMAGE_CHANNELS_KEY: int_feature(facts.channels),
        IMAGE_FORMAT_KEY: bytes_feature(facts.source_format.encode()),
        IMAGE_FILE_BYTES_KEY: int_feature(facts.file_bytes),
        IMAGE_BRIGHTNESS_KEY: float_feature(facts.brightness),
        IMAGE_SATURATION_KEY: float_feature(facts.saturation),
    }))


def _write_json_lines(pcoll: beam.PCollection, path_prefix: str, label: str) -> None:
    """One JSON value per line, in as many shards as the runner likes: nothing is gathered."""
    _ = (pcoll
         | f'{label}Json' >> beam.Map(lambda value: json.dumps(value, sort_keys=True))
         | f'{label}Write' >> beam.io.WriteToText(path_prefix, file_name_suffix='.jsonl'))


def _read_json_lines(pattern: str) -> List[Any]:
    values = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as f:
            values.extend(json.loads(line) for line in f if line.strip())
    return values


def _order_key(item: Tuple[int, str]) -> bytes:
    return hashlib.sha256(item[1].encode()).digest()


@beam.ptransform_fn
def _InPathHashOrder(files: beam.PCollection) -> beam.PCollection:
    """(label, path) in the order of a hash of the path, instead of class by class as listed.

    Examples are written in the order they are read, and the Trainer shuffles them with a
    bounded buffer: a split written class by class would train on batches of one class.
    Beam's Reshuffle does not reorder anything on the DirectRunner (TFX's own shuffle before
    writing did not either); sorting within a few hash buckets does, the same way on every run,
    and holds nothing but paths.
    """
    return (files
            | 'KeyByBucket' >> beam.Map(lambda item: (_order_key(item)[0] % _ORDER_BUCKETS, item))
            | 'Buckets' >> beam.GroupByKey()
            | 'SortEachBucket' >> beam.FlatMapTuple(lambda bucket, items: sorted(items, key=_order_key)))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.PCollection:
    """Lists the class folders of one split folder in parallel, then reads every file as a stream."""
    data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    split_folder = split_folder_of(split_pattern)
    listed = (pipeline
              | 'ClassFolders' >> beam.Create(exec_properties[_CLASS_FOLDERS][split_folder])
              | 'ListFiles' >> beam.ParDo(_ListClassFolder(data_root)).with_outputs(_SKIPPED, main='files'))
    read = (listed['files']
            | 'InPathHashOrder' >> _InPathHashOrder()  # pylint: disable=no-value-for-parameter
            | 'Distribute' >> beam.Reshuffle()
            | 'ReadImages' >> beam.ParDo(_ReadImage(data_root, exec_properties[_READING],
                                                    exec_properties[_CLASS_NAMES])).with_outputs(
                _SKIPPED, _CONVERTED, main='examples'))
    report_prefix = os.path.join(exec_properties[_REPORT_DIR], split_folder or 'all')
    skipped = (listed[_SKIPPED], read[_SKIPPED]) | 'AllSkipped' >> beam.Flatten()
    _write_json_lines(skipped, report_prefix + '-skipped', 'Skipped')
    _write_json_lines(read[_CONVERTED], report_prefix + '-converted', 'Converted')
    return read['examples']


def _summary(example: tf.train.Example, split: str) -> Tuple[str, int, str, str]:
    features = example.features.feature
    return (split, features[LABEL_KEY].int64_list.value[0],
            features[CONTENT_HASH_KEY].bytes_list.value[0].decode(), features[FILENAME_KEY].bytes_list.value[0].decode())


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Reads the folder in Beam, then checks the classes and writes class names and the report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImagesToExample

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        """TFX's splitting, plus what the report needs from the split examples: counts and duplicates."""
        splits = super().GenerateExamplesByBeam(pipeline, exec_properties)
        report_dir = exec_properties[_REPORT_DIR]
        summaries = ([examples | f'Summarise[{split}]' >> beam.Map(_summary, split)
                      for split, examples in splits.items()]
                     | 'AllSummaries' >> beam.Flatten())
        counts = (summaries
                  | 'SplitAndLabel' >> beam.Map(lambda summary: summary[:2])
                  | 'Count' >> beam.combiners.Count.PerElement()
                  | 'CountRecord' >> beam.Map(lambda item: {'split': item[0][0], 'label': item[0][1], 'images': item[1]}))
        _write_json_lines(counts, os.path.join(report_dir, 'counts'), 'Counts')
        duplicates = (summaries
                      | 'ByContent' >> beam.Map(lambda s: (s[2], {'file': s[3], 'label': s[1], 'split': s[0]}))
                      | 'GroupByContent' >> beam.GroupByKey()
                      | 'Files' >> beam.MapTuple(lambda content_hash, files: list(files))
                      | 'OnlyDuplicates' >> beam.Filter(lambda files: len(files) > 1))
        _write_json_lines(duplicates, os.path.join(report_dir, 'duplicates'), 'Duplicates')
        return splits

    def Do(self, input_dict, output_dict, exec_properties):
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        split_folders = [split_folder_of(split.pattern) for split in input_config.splits]
        layout = data_folder.CLASS_FOLDERS if split_folders == [''] else data_folder.PRE_SPLIT
        reading = reading_config(exec_properties)
        if not tf.io.gfile.isdir(data_root):
            raise IngestionError(f'data_root {data_root} is not a folder')
        found = data_folder.find_class_folders(data_root, split_folders)
        _require_two_classes(found.class_names, data_root, layout)

        report = self._ingest(examples, exec_properties, found, found.class_names, reading, layout)
        unusable = report_lib.unusable_classes(report)
        if unusable and reading.drop_unusable_classes:
            kept = [name for name in found.class_names if name not in unusable]
            logger.warning('Dropping class(es) %s and ingesting again without them',
                           '; '.join(f'{name} ({why})' for name, why in unusable.items()))
            _require_two_classes(kept, data_root, layout)
            for split in artifact_utils.decode_split_names(examples.split_names):
                split_uri = artifact_utils.get_split_uri([examples], split)
                if tf.io.gfile.exists(split_uri):
                    tf.io.gfile.rmtree(split_uri)
            report = self._ingest(examples, exec_properties, found, kept, reading, layout)
            report['dropped_classes'] = unusable

        names = report['class_names']
        with tf.io.gfile.GFile(os.path.join(examples.uri, REPORT_FILE), 'w') as f:
            json.dump(report, f, indent=1)
        class_names_lib.write(examples.uri, names)
        examples.set_string_custom_property(class_names_lib.PROPERTY_NAME, json.dumps(names))
        examples.set_int_custom_property('num_skipped', len(report['skipped']))
        examples.set_int_custom_property('num_converted', len(report['converted']))
        examples.set_int_custom_property('num_duplicate_groups', len(report['duplicates']))
        logger.info('%s', report_lib.format_summary(report))
        report_lib.check(report)

    def _write_examples(self, examples, exec_properties: Dict[str, Any]) -> None:
        """BaseExampleGenExecutor.Do, without the Reshuffle its WriteSplit puts before writing.

        That shuffle is a GroupByKey over every serialized example: the DirectRunner holds the
        whole data set in memory until the last file is read (bench/ingestion.py, 100,000 images
        of 4 KB: a peak of 3.2 GB with it, 1.1 GB without). It did not mix the order on the
        DirectRunner either; _InPathHashOrder does, before the files are read, so examples
        stream to disk as they are made.
        """
        input_config = proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                                 example_gen_pb2.Input())
        output_config = proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                                  example_gen_pb2.Output())
        examples.split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config))
        with self._make_beam_pipeline() as pipeline:
            for split, records in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                path = os.path.join(artifact_utils.get_split_uri([examples], split), write_split.DEFAULT_FILE_NAME)
                _ = (records
                     | f'Serialize[{split}]' >> beam.ParDo(write_split.MaybeSerialize())
                     | f'Write[{split}]' >> beam.io.WriteToTFRecord(path, file_name_suffix='.gz'))
        examples_utils.set_payload_format(examples, exec_properties.get(
            standard_component_specs.OUTPUT_DATA_FORMAT_KEY, example_gen_pb2.FORMAT_TF_EXAMPLE))
        examples_utils.set_file_format(examples, write_split.to_file_format_str(
            exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY, example_gen_pb2.FORMAT_TFRECORDS_GZIP)))

    def _ingest(self, examples, exec_properties, found: data_folder.ClassFolders, names: List[str],
                reading: ImageReadingConfig, layout: str) -> Dict[str, Any]:
        """One Beam run over the class folders of `names`; returns the report."""
        report_dir = os.path.join(examples.uri, '_ingestion')
        class_folders = {split_folder: [(names.index(name), folder) for name, folder in folders if name in names]
                         for split_folder, folders in found.folders.items()}
        self._write_examples(examples, dict(exec_properties, **{
            _CLASS_FOLDERS: class_folders, _CLASS_NAMES: list(names), _READING: reading.model_dump(),
            _REPORT_DIR: report_dir}))

        split_names = artifact_utils.decode_split_names(examples.split_names)
        counts = {split: {} for split in split_names}
        for record in _read_json_lines(os.path.join(report_dir, 'counts*.jsonl')):
            counts[record['split']][names[record['label']]] = record['images']
        duplicates = [[{'file': item['file'], 'class': names[item['label']], 'split': item['split']} for item in files]
                      for files in _read_json_lines(os.path.join(report_dir, 'duplicates*.jsonl'))]
        skipped = [skip.to_json() for skip in found.skipped] + _read_json_lines(
            os.path.join(report_dir, '*-skipped*.jsonl'))
        converted = _read_json_lines(os.path.join(report_dir, '*-converted*.jsonl'))
        report = report_lib.build(layout, names, counts, skipped, converted, duplicates)
        tf.io.gfile.rmtree(report_dir)
        return report


def _require_two_classes(names: List[str], data_root: str, layout: str) -> None:
    if len(names) >= 2:
        return
    expected = 'data_root/<class>/<image files>'
    if layout == data_folder.PRE_SPLIT:
        expected = ('data_root/<split>/<class>/<image files> with split folders train, validation (or val, '
                    'eval) and test; set layout: class_folders if the top-level folders are the classes')
    raise IngestionError(
        f'{data_root} must contain at least two class folders, found {len(names)}: {names}. Expected {expected}.')


def reading_config(exec_properties: Dict[str, Any]) -> ImageReadingConfig:
    """The executor's options, from the component's custom_config (defaults if there is none)."""
    text = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if not text:
        return ImageReadingConfig()
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(text, config)
    values = struct_pb2.Struct()
    config.custom_config.Unpack(values)
    values = json_format.MessageToDict(values)
    return ImageReadingConfig(**{key: values[key] for key in ImageReadingConfig.model_fields if key in values})


def custom_config(reading: ImageReadingConfig, code_version: str = '') -> example_gen_pb2.CustomConfig:
    """The executor's options as TFX carries them (an Any); code_version only feeds the cache key."""
    values = struct_pb2.Struct()
    values.update(dict(_project(reading, ImageReadingConfig), code_version=code_version))
    packed = any_pb2.Any()
    packed.Pack(values)
    return example_gen_pb2.CustomConfig(custom_config=packed)


def _project(config, model) -> Dict[str, Any]:
    return {name: getattr(config, name) for name in model.model_fields}
