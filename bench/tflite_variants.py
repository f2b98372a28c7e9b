"""TFLite variants on a real set: size, latency and test accuracy of each against the SavedModel.

    python -m bench.tflite_variants [--set fashion_mnist|tuxpaint|openclipart] [--quick]

Runs the pipeline once (python -m pipeline.local_runner, recipe auto, MobileNetV2 at 160 px
with imagenet-torchvision weights, `tflite: [float32, float16, dynamic, int8]` and the default
budget max_tflite_accuracy_drop 0.01) on the set's folders as bench/recipe.py exports them
(Fashion-MNIST by default: 1,000 test images, so one point is ten images), and tabulates
TFLiteExport's own report: what the Pusher got is exactly what the table says. Then a study
of int8 alone on the same trained model and test images: the pipeline's conversion (200
calibration images), 1,000 calibration images, and TFLite's older quantiser, each with its
accuracy and how often it gives the SavedModel's answer.
--skip-pipeline: reuse the last run in the work folder (the study only).
--quick: 20 / 10 / 20 images per class at 96 px (minutes, a smoke test).
Writes bench/results/tflite_variants.md and .json (read by bench/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import recipe
from bench.report import RESULTS_DIR, write_table

VARIANTS = ['float32', 'float16', 'dynamic', 'int8']


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--set', choices=recipe.SETS, default='fashion_mnist')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--work', type=Path, default=recipe.REPO / 'bench' / '.work' / 'tflite')
    parser.add_argument('--skip-pipeline', action='store_true')
    args = parser.parse_args(argv)
    sizes = recipe.QUICK if args.quick else recipe.FULL
    stem = 'tflite_variants-quick' if args.quick else 'tflite_variants'
    name = f'{args.set}-tflite'
    if args.skip_pipeline:
        result = json.loads((RESULTS_DIR / f'{stem}.json').read_text())
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        recipe.weights_file(args.work)  # converted once, found by the pipeline through KERAS_HOME
        data = recipe.export_set(args.set, args.work, sizes)
        run = recipe.run_pipeline(name, data, args.work, sizes, args.quick, tflite=VARIANTS)
        from pipeline import run_summary
        from pipeline.config import load_config
        summary = run_summary.latest_run(load_config(args.work / f'{name}.yaml'))
        result = {'set': args.set, 'quick': args.quick, 'commit': recipe._commit(), 'pipeline_seconds': run['seconds'],
                  'tflite_export_seconds': run['components'].get('TFLiteExport'),
                  'evaluator_accuracy': summary.accuracy, 'model_uri': summary.model_uri,
                  'examples_uri': _examples_uri(args.work / name), 'report': summary.tflite}
    result['int8_study'] = int8_study(result['model_uri'], result['examples_uri'])
    (RESULTS_DIR / f'{stem}.json').write_text(json.dumps(result, indent=1))
    write_report(result, stem)
    return 0


def _examples_uri(output: Path) -> str:
    return str(max((output / 'pipeline_root' / 'ImageExampleGen' / 'examples').iterdir(), key=lambda p: int(p.name)))


def int8_study(model_uri: str, examples_uri: str) -> list:
    """int8 conversions of the Trainer's model with other settings than the pipeline's, each
    measured on the same decoded test images as TFLiteExport measures."""
    import numpy as np
    import tensorflow as tf
    from tfx.utils import path_utils

    from components.tflite import export, variants
    from components.tflite.interpreter import TFLiteModel
    from components.tflite.spec import TFLiteSpec
    from components.trainer.serving import PIXELS_SIGNATURE
    saved_model = path_utils.serving_model_path(model_uri)
    from_pixels = tf.saved_model.load(saved_model).signatures[PIXELS_SIGNATURE]
    size = int(from_pixels.structured_input_signature[1]['pixels'].shape[1])
    spec = TFLiteSpec()
    batches = list(export.split_pixels(examples_uri, 'test', size, spec))
    pixels, labels = np.concatenate([p for p, _ in batches]), np.concatenate([l for _, l in batches])
    reference = np.concatenate([from_pixels(pixels=tf.constant(pixels[i:i + 64]))['probabilities'].numpy().argmax(1)
                                for i in range(0, len(pixels), 64)])
    rows = []
    for label, calibration, new_quantizer in (('the pipeline\'s: 200 calibration images', 200, True),
                                              ('1,000 calibration images', 1000, True),
                                              ('200 images, TFLite\'s older quantiser', 200, False)):
        model = variants.convert(saved_model, PIXELS_SIGNATURE, 'int8',
                                 export.calibration_images(examples_uri, size, spec, calibration), new_quantizer)
        predicted = TFLiteModel(model_content=model, num_threads=None).probabilities(pixels).argmax(1)
        rows.append({'int8': label, 'accuracy': float(np.mean(predicted == labels)),
                     'agreement': float(np.mean(predicted == reference))})
        print(rows[-1], flush=True)
    return rows


def write_report(result: dict, stem: str) -> None:
    report = result['report']
    reference = report['savedmodel']
    rows = [['SavedModel (TensorFlow)', f'{reference["size_bytes"] / 1e6:.2f}', f'{reference["accuracy"]:.4f}', '-',
             f'{reference["latency_ms"]:.1f}', '(reference)']]
    for variant, item in report['variants'].items():
        if item.get('accuracy') is None:
            rows.append([variant, '-', '-', '-', '-', f'no: {item.get("reason")}'])
            continue
        rows.append([variant, f'{item["size_bytes"] / 1e6:.2f}', f'{item["accuracy"]:.4f}',
                     f'{100 * item["accuracy_drop"]:+.1f}', f'{item["latency_ms"]:.1f}',
                     'yes' if item['pushed'] else f'no: {item["reason"]}'])
    write_table(
        stem, f'TFLite variants against the SavedModel ({result["set"]})',
        f'One pipeline run on {result["set"]} ({report["test_images"]} test images, {report["image_size"]} px, '
        f'MobileNetV2 imagenet-torchvision, recipe auto), commit {result["commit"]}; the table is '
        f'TFLiteExport\'s own report. Accuracy is on the test split decoded as Transform decodes it, the '
        f'SavedModel through its from_pixels signature on the same pixels; "drop" is the SavedModel\'s '
        f'accuracy minus the variant\'s, in points (budget: {report["max_accuracy_drop"]}). Latency: '
        f'{report["latency"]} for the TFLite interpreter; the SavedModel\'s is TensorFlow at batch 1 with its '
        f'default threads. Sizes in MB (10^6 bytes; the SavedModel folder). TFLiteExport took '
        f'{result["tflite_export_seconds"]:.0f} s of a {result["pipeline_seconds"]:.0f} s run.',
        ['model', 'size MB', 'test accuracy', 'drop (points)', 'ms per image', 'pushed'], rows)
    study = result.get('int8_study')
    if study:
        path = RESULTS_DIR / f'{stem}.md'
        lines = ['', f'int8 alone, other conversion settings, same model and test images (`--skip-pipeline` re-runs '
                     f'only this): "agreement" is the share of test images where int8 gives the SavedModel\'s '
                     f'answer (SavedModel accuracy {reference["accuracy"]:.4f}).', '',
                 '| int8 conversion | test accuracy | agreement with the SavedModel |', '| --- | --- | --- |']
        lines += [f'| {row["int8"]} | {row["accuracy"]:.4f} | {row["agreement"]:.3f} |' for row in study]
        path.write_text(path.read_text() + '\n'.join(lines) + '\n')


if __name__ == '__main__':
    raise SystemExit(main())
