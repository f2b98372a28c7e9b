"""ImageExampleGen: a folder of images, one sub-folder per class, as TFX Examples.

A custom executor for TFX's own FileBasedExampleGen, so splitting, output format, caching
by input fingerprint and ML Metadata all behave as for any TFX ExampleGen. It reads
`data_root/<class>/**/<file>` and emits tf.Examples:

    image_raw  bytes   the file's encoded bytes, untouched
    label      int64   index of the class in the sorted class names
    filename   bytes   path relative to data_root; the split is a stable hash of it

Files that TensorFlow cannot decode are skipped, counted and listed in a report next to the
examples (`ingestion_report.json`), never passed on to crash Transform. The class names are
written next to the examples (see components.class_names).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Iterator, List, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs

from components import class_names as class_names_lib
from components.features import FILENAME_KEY, IMAGE_KEY, LABEL_KEY
from components.image_decoding import DECODABLE_EXTENSIONS, decode_error_reason

logger = logging.getLogger(__name__)

REPORT_FILE = 'ingestion_report.json'
SPLIT_NAMES = ('train', 'eval', 'test')

# exec_properties the executor adds for its own Beam transforms.
_CLASS_NAMES = '_class_names'
_REPORT_DIR = '_report_dir'
_SKIPPED_TAG = 'skipped'


class IngestionError(RuntimeError):
    """The data folder cannot produce a usable dataset; the message names the problem."""


def _is_hidden(name: str) -> bool:
    return name.startswith('.') or name in ('Thumbs.db', 'desktop.ini')


def list_class_names(data_root: str) -> List[str]:
    """Sorted class sub-folders of data_root; errors name what is wrong with the folder."""
    if not tf.io.gfile.isdir(data_root):
        raise IngestionError(f'data_root {data_root} is not a folder')
    entries = sorted(tf.io.gfile.listdir(data_root))
    names = [e.rstrip('/') for e in entries
             if not _is_hidden(e) and tf.io.gfile.isdir(os.path.join(data_root, e))]
    if len(names) < 2:
        raise IngestionError(
            f'data_root {data_root} must contain one sub-folder per class (at least two), '
            f'found {len(names)}: {names}. Expected layout: data_root/<class name>/<image files>.')
    empty = [name for name in names if not _has_any_file(os.path.join(data_root, name))]
    if empty:
        raise IngestionError(f'class folder(s) with no files in {data_root}: {", ".join(empty)}')
    return names


def _has_any_file(folder: str) -> bool:
    for _, _, files in tf.io.gfile.walk(folder):
        if any(not _is_hidden(f) for f in files):
            return True
    return False


def _list_class_files(item: Tuple[int, str], data_root: str) -> Iterator[Tuple[int, str]]:
    """(label, class name) -> (label, path relative to data_root) for every file below the class."""
    label, name = item
    class_dir = os.path.join(data_root, name)
    for folder, subfolders, files in tf.io.gfile.walk(class_dir):
        subfolders[:] = [d for d in subfolders if not _is_hidden(d)]
        for file_name in sorted(files):
            relative = os.path.relpath(os.path.join(folder, file_name), data_root)
            yield label, relative.replace(os.sep, '/')


def _skip_reason(data: bytes) -> str:
    """Why a file cannot become an example, or '' if it can."""
    if not data:
        return 'empty file'
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        return f'not decodable by TensorFlow: {decode_error_reason(error.message)}'
    return ''


class _ReadImage(beam.DoFn):
    """(label, relative path) -> tf.Example, or a tagged (path, reason) for a skipped file."""

    def __init__(self, data_root: str):
        self._data_root = data_root

    def process(self, item: Tuple[int, str]):
        label, relative = item
        base_name = os.path.basename(relative)
        if _is_hidden(base_name):
            yield beam.pvalue.TaggedOutput(_SKIPPED_TAG, (relative, 'hidden or system file'))
            return
        extension = os.path.splitext(base_name)[1].lower()
        if extension not in DECODABLE_EXTENSIONS:
            yield beam.pvalue.TaggedOutput(
                _SKIPPED_TAG, (relative, f'unsupported file type {extension or "(no extension)"}; '
                                         f'supported: {" ".join(DECODABLE_EXTENSIONS)}'))
            return
        try:
            with tf.io.gfile.GFile(os.path.join(self._data_root, relative), 'rb') as f:
                data = f.read()
        except (OSError, tf.errors.OpError) as error:
            yield beam.pvalue.TaggedOutput(_SKIPPED_TAG, (relative, f'unreadable: {error}'))
            return
        reason = _skip_reason(data)
        if reason:
            yield beam.pvalue.TaggedOutput(_SKIPPED_TAG, (relative, reason))
            return
        yield tf.train.Example(features=tf.train.Features(feature={
            IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
            LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[relative.encode()])),
        }))


def _write_json(pcoll: beam.PCollection, path: str, label: str) -> None:
    """Writes a PCollection of one JSON-able value (e.g. from ToList) as one file."""
    _ = (pcoll
         | f'{label}Json' >> beam.Map(lambda value: json.dumps(value, sort_keys=True))
         | f'{label}Write' >> beam.io.WriteToText(path, shard_name_template='', num_shards=1))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.PCollection:
    """Lists each class folder in parallel and reads every file as a stream."""
    del split_pattern  # The folder layout, not a glob, defines the data.
    data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    results = (
        pipeline
        | 'Classes' >> beam.Create(list(enumerate(exec_properties[_CLASS_NAMES])))
        | 'ListFiles' >> beam.FlatMap(_list_class_files, data_root)
        | 'Distribute' >> beam.Reshuffle()
        | 'ReadImages' >> beam.ParDo(_ReadImage(data_root)).with_outputs(_SKIPPED_TAG, main='examples'))
    skipped = (results[_SKIPPED_TAG]
               | 'SkippedToList' >> beam.combiners.ToList()
               | 'SortSkipped' >> beam.Map(sorted))
    _write_json(skipped, os.path.join(exec_properties[_REPORT_DIR], 'skipped.json'), 'Skipped')
    return results['examples']


def _label_of(example: tf.train.Example) -> int:
    return example.features.feature[LABEL_KEY].int64_list.value[0]


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Runs the image PTransform, then writes class names and the ingestion report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImagesToExample

    def GenerateExamplesByBeam(self, pipeline, exec_properties):
        splits = super().GenerateExamplesByBeam(pipeline, exec_properties)
        for split_name, examples in splits.items():
            counts = (examples
                      | f'Labels[{split_name}]' >> beam.Map(_label_of)
                      | f'CountLabels[{split_name}]' >> beam.combiners.Count.PerElement()
                      | f'CountsToList[{split_name}]' >> beam.combiners.ToList())
            _write_json(counts, os.path.join(exec_properties[_REPORT_DIR], f'counts-{split_name}.json'),
                        f'Counts[{split_name}]')
        return splits

    def Do(self, input_dict, output_dict, exec_properties):
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        data_root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        names = list_class_names(data_root)
        report_dir = os.path.join(examples.uri, '_ingestion')
        exec_properties = dict(exec_properties, **{_CLASS_NAMES: names, _REPORT_DIR: report_dir})
        super().Do(input_dict, output_dict, exec_properties)

        split_names = artifact_utils.decode_split_names(examples.split_names)
        report = _collect_report(report_dir, names, split_names)
        tf.io.gfile.rmtree(report_dir)
        with tf.io.gfile.GFile(os.path.join(examples.uri, REPORT_FILE), 'w') as f:
            json.dump(report, f, indent=1)
        class_names_lib.write(examples.uri, names)
        examples.set_string_custom_property(class_names_lib.PROPERTY_NAME, json.dumps(names))
        examples.set_int_custom_property('num_skipped', len(report['skipped']))
        logger.info('%s', format_report(report))
        _check_usable(report)


def _collect_report(report_dir: str, names: List[str], split_names: List[str]) -> Dict[str, Any]:
    def load(file_name):
        with tf.io.gfile.GFile(os.path.join(report_dir, file_name)) as f:
            return json.load(f)

    counts = {split: {names[label]: n for label, n in load(f'counts-{split}.json')}
              for split in split_names}
    counts = {split: {name: per_class.get(name, 0) for name in names} for split, per_class in counts.items()}
    return {
        'class_names': names,
        'counts': counts,
        'total': sum(sum(per_class.values()) for per_class in counts.values()),
        'skipped': [{'file': path, 'reason': reason} for path, reason in load('skipped.json')],
    }


def format_report(report: Dict[str, Any]) -> str:
    """A short table: images per class and split, then the skipped files."""
    splits = list(report['counts'])
    width = max(len(name) for name in report['class_names'] + ['class'])
    lines = [f'Ingested {report["total"]} images of {len(report["class_names"])} classes, '
             f'skipped {len(report["skipped"])} files.',
             '  ' + 'class'.ljust(width) + ''.join(f'{s:>8}' for s in splits)]
    for name in report['class_names']:
        lines.append('  ' + name.ljust(width) + ''.join(f'{report["counts"][s][name]:>8}' for s in splits))
    for item in report['skipped'][:20]:
        lines.append(f'  skipped {item["file"]}: {item["reason"]}')
    if len(report['skipped']) > 20:
        lines.append(f'  ... and {len(report["skipped"]) - 20} more skipped files, see {REPORT_FILE}')
    return '\n'.join(lines)


def _check_usable(report: Dict[str, Any]) -> None:
    """Fails the component on data a model cannot be trained and evaluated on."""
    counts = report['counts']
    per_class = {name: sum(counts[s][name] for s in counts) for name in report['class_names']}
    no_images = [name for name, n in per_class.items() if n == 0]
    if no_images:
        raise IngestionError(
            f'class(es) without a single usable image: {", ".join(no_images)} '
            f'(see skipped files in {REPORT_FILE})')
    empty_splits = [split for split, per in counts.items() if sum(per.values()) == 0]
    if empty_splits:
        raise IngestionError(
            f'split(s) {", ".join(empty_splits)} received no images out of {report["total"]}: '
            f'add images or raise their share in split_ratios')
    for split, per in counts.items():
        missing = [name for name, n in per.items() if n == 0]
        if missing:
            logger.warning('split %s has no image of class(es) %s; its metrics will not cover them',
                           split, ', '.join(missing))


def output_config(train: int, eval: int, test: int) -> example_gen_pb2.Output:  # noqa: A002
    """Hash buckets in the given proportions, hashing the relative path (not the content)."""
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=buckets)
                for name, buckets in zip(SPLIT_NAMES, (train, eval, test), strict=True)],
        partition_feature_name=FILENAME_KEY))


def ImageExampleGen(data_root: str, train: int = 80, eval: int = 10, test: int = 10):  # noqa: A002,N802
    """A FileBasedExampleGen reading class folders with the image executor."""
    return FileBasedExampleGen(
        input_base=data_root,
        # The input pattern only feeds TFX's input fingerprint (which decides caching):
        # it covers the files of every class folder.
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name='images', pattern='*/*')]),
        output_config=output_config(train, eval, test),
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    ).with_id('ImageExampleGen')
