"""`make demo`: the whole pipeline through the `tfx` CLI, then predictions from the pushed model.

    python -m pipeline.demo [--config FILE]

Runs `tfx pipeline create` (or `update` when the pipeline exists) and `tfx run create` with
the local engine, keeping the CLI's state in the config's `cli_home` (LOCAL_HOME) instead of
~/tfx, and Keras' and matplotlib's files under output_dir (see local_runner). Then prints where
the pushed model is and its predictions for the images in data/predict_examples, which are not
part of the training data.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import PIPELINE_CONFIG_ENV, ConfigError, config_path_from_env, load_config
from pipeline.local_runner import keep_tool_files_out_of_home

REPO_ROOT = Path(__file__).resolve().parent.parent
PIPELINE_FILE = REPO_ROOT / 'pipeline' / 'local_runner.py'
EXAMPLES_DIR = REPO_ROOT / 'data' / 'predict_examples'


def _tfx(args: List[str], env: dict) -> None:
    command = [str(Path(sys.executable).with_name('tfx'))] + args
    print('$ ' + ' '.join(['tfx'] + args), flush=True)
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        sys.exit(f'`tfx {" ".join(args)}` failed with exit status {result.returncode}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', help='YAML config (default: $PIPELINE_CONFIG, else pipeline/config.yaml)')
    args = parser.parse_args(argv)
    config_path = config_path_from_env(args.config).resolve()
    keep_tool_files_out_of_home(str(config_path))  # for this process and the `tfx` CLI's
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2

    env = dict(os.environ, **{
        PIPELINE_CONFIG_ENV: str(config_path),
        'LOCAL_HOME': config.cli_home,
        # google-api-core warns at import that Python 3.11 support ends in 2027 (4 times).
        'PYTHONWARNINGS': 'ignore:You are using a Python version:FutureWarning',
    })
    exists = Path(config.cli_home, config.pipeline_name).exists()
    _tfx(['pipeline', 'update' if exists else 'create', '--engine', 'local',
          '--pipeline_path', str(PIPELINE_FILE)], env)
    _tfx(['run', 'create', '--engine', 'local', '--pipeline_name', config.pipeline_name], env)

    from pipeline import predict, run_summary
    summary = run_summary.latest_run(config)
    if summary and summary.pushed_destination:
        print(f'\nPushed model: {summary.pushed_destination}')
    else:
        print('\nThis run pushed no model (it did not pass the gate); the serving directory is unchanged.')
    if summary and summary.report_uri:
        print(f'Report: {summary.report_uri}/report.html (python -m pipeline.report --open shows it)')
    try:
        model_dir = predict.resolve_model_dir(config.serving_dir)
    except FileNotFoundError:
        print(f'No model in {config.serving_dir} yet.')
        return 1
    print(f'Predictions of {model_dir} for {EXAMPLES_DIR.relative_to(REPO_ROOT)}/ '
          f'(images the model has not seen):')
    return predict.main(['--model', str(model_dir), '--top-k', '2', str(EXAMPLES_DIR)])


if __name__ == '__main__':
    sys.exit(main())
