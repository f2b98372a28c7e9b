"""The data checks' default thresholds on real image sets: false alarms and what they catch.

    python -m bench.data_drift [--sets tuxpaint openclipart fashion_mnist]

For each set (exported as bench/recipe.py exports it, into bench/.work/recipe), the training
images are split at random (seeded) into two halves, A and B: two batches of new images of the
same kind, as two nightly runs would see them. Each half becomes tf.Examples exactly as
ImageExampleGen writes them (components/example_gen/ingestion: inspection, image_facts) and
TFDV computes their statistics sliced by class, as StatisticsGen does in the pipeline; then
DataValidator's checks (components/data_validation/checks.py) with the default thresholds
compare, treating the halves as the `train` split:
  same kind      B against A: any finding is a false alarm;
  thumbnails     B with its first class turned into grayscale thumbnails (a quarter of the
                 size, L mode) against A: the class and its features must be named;
  class dropped  B without its first class against A.
Reported: the findings and the largest drift figure of each measure, split-wide and per class
(so the margin between the thresholds and same-kind noise shows).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
from pathlib import Path
from typing import Dict, List

from bench.report import RESULTS_DIR, write_table

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / 'bench' / '.work' / 'recipe'
SETS = ('tuxpaint', 'openclipart', 'fashion_mnist')
SCENARIOS = ('same kind', 'thumbnails', 'class dropped')


def images_of(train_dir: Path) -> List[tuple]:
    """(class name, path) of every training image, sorted."""
    return sorted((path.parent.name, path) for path in train_dir.glob('*/*') if path.is_file())


def examples(files: List[tuple], class_names: List[str], thumbnail_class: str = None) -> List[bytes]:
    """Serialized tf.Examples as ImageExampleGen makes them; thumbnail_class's images shrunk to
    a quarter and made grayscale first."""
    import hashlib

    from PIL import Image

    from components.example_gen.executor import image_example
    from components.example_gen.ingestion import inspection
    records = []
    for name, path in files:
        data = path.read_bytes()
        if name == thumbnail_class:
            with Image.open(io.BytesIO(data)) as image:
                small = image.convert('L').resize((max(1, image.width // 4), max(1, image.height // 4)))
            buffer = io.BytesIO()
            small.save(buffer, format='PNG')
            data = buffer.getvalue()
        outcome = inspection.inspect(data, 100_000_000, True)
        if isinstance(outcome, inspection.Refused):
            continue
        records.append(image_example(outcome.encoded, class_names.index(name), name, str(path),
                                hashlib.sha256(data).hexdigest(), outcome.facts).SerializeToString())
    return records


def statistics(records: List[bytes], schema):
    """TFDV statistics of the records, sliced by class_name and with the schema (image_channels
    is a category), as the pipeline's StatisticsGen computes them."""
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    from pipeline.tfx_pipeline import statistics_options
    options = statistics_options()
    options.schema = schema
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / 'examples.tfrecord')
        with tf.io.TFRecordWriter(path) as writer:
            for record in records:
                writer.write(record)
        return tfdv.generate_statistics_from_tfrecord(path, stats_options=options, pipeline_options=None)


def measure(set_name: str) -> Dict[str, dict]:
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    from components.data_validation import checks
    from components.data_validation.spec import DataValidationSpec
    data = WORK / ('data' if set_name == 'fashion_mnist' else f'data-{set_name}')
    if not (data / 'train').is_dir():
        from bench.recipe import FULL, export_set
        data = export_set(set_name, WORK, FULL)
    files = images_of(data / 'train')
    class_names = sorted({name for name, _ in files})
    random.Random(0).shuffle(files)
    half_a, half_b = files[::2], files[1::2]
    first = class_names[0]
    schema = io_utils.parse_pbtxt_file(str(REPO / 'schemas' / 'schema.pbtxt'), schema_pb2.Schema())
    previous = {'train': statistics(examples(half_a, class_names), schema)}
    variants = {
        'same kind': examples(half_b, class_names),
        'thumbnails': examples(half_b, class_names, thumbnail_class=first),
        'class dropped': examples([f for f in half_b if f[0] != first], class_names),
    }
    results = {}
    for scenario, records in variants.items():
        result = checks.validate({'train': statistics(records, schema)}, schema, DataValidationSpec(), previous)
        largest = {}
        for drift in result.drift:
            key = f'{drift.measure} {"per class" if drift.class_name else "split"}'
            if drift.value >= largest.get(key, {}).get('value', -1):
                largest[key] = {'value': drift.value, 'feature': drift.feature, 'class': drift.class_name}
        results[scenario] = {'images': len(records), 'largest': largest,
                             'findings': [dict(feature=f.feature, class_name=f.class_name, message=f.message())
                                          for f in result.findings]}
        print(set_name, scenario, json.dumps(results[scenario])[:400], flush=True)
    return {'classes': len(class_names), 'first_class': first, 'half_a': len(half_a), 'scenarios': results}


def _largest(scenario: dict, key: str) -> str:
    item = scenario['largest'].get(key)
    if not item:
        return '-'
    where = f' ({item["class"]})' if item['class'] else ''
    return f'{item["value"]:.3f} {item["feature"]}{where}'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sets', nargs='+', choices=SETS, default=list(SETS))
    args = parser.parse_args(argv)
    measured = {name: measure(name) for name in args.sets}
    (RESULTS_DIR / 'data_drift.json').write_text(json.dumps(measured, indent=1))
    rows = []
    for name, result in measured.items():
        for scenario, figures in result['scenarios'].items():
            findings = figures['findings']
            named = sorted({f['feature'] + (f' ({f["class_name"]})' if f['class_name'] else '') for f in findings})
            rows.append([name, scenario if scenario != 'thumbnails' else f'thumbnails of {result["first_class"]}',
                         str(figures['images']), f'{len(findings)}: ' + ', '.join(named) if findings else '0',
                         _largest(figures, 'L_INFTY split'), _largest(figures, 'L_INFTY per class'),
                         _largest(figures, 'JENSEN_SHANNON_DIVERGENCE split'),
                         _largest(figures, 'JENSEN_SHANNON_DIVERGENCE per class')])
    write_table('data_drift', 'Data checks on real image sets: same-kind noise against real changes',
                'Training images split at random into halves A and B; B (or B changed) checked against A '
                'with the default thresholds (class_balance and image_kind 0.1, L-infinity; image_size and '
                'image_colour 0.5, Jensen-Shannon divergence; drift measured where both have 30 images, '
                'min_images). "findings": how many, and which features (class); the largest drift figures '
                'show the margins to the thresholds. Every finding is in data_drift.json.',
                ['set', 'B is', 'images in B', 'findings', 'largest L-inf, split', 'largest L-inf, one class',
                 'largest JSD, split', 'largest JSD, one class'], rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
