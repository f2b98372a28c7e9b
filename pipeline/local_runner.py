"""Runs the pipeline on this machine with TFX's LocalDagRunner (Beam DirectRunner, SQLite MLMD).

    python -m pipeline.local_runner --config pipeline/config.yaml [--set key=value ...]

This file is also the pipeline file the `tfx` CLI is given (`--pipeline_path`); the CLI runs
it without arguments, so it then reads the config named by $PIPELINE_CONFIG.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Optional, Sequence

from components import gpu_memory
from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import (ConfigError, PipelineConfig, add_config_arguments, configured_output_dir,
                             load_config)

logger = logging.getLogger('pipeline.local_runner')


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    parser.add_argument('--verbose', action='store_true', help='show the full TFX log on the console')
    return parser.parse_args(argv)


def _running_under_tfx_cli_compile() -> bool:
    """`tfx pipeline create` runs this file with LocalDagRunner.run patched to only record the pipeline."""
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    return hasattr(LocalDagRunner.run, '__wrapped__')


def run(config: PipelineConfig, verbose: bool = False) -> bool:
    """Runs the whole pipeline; returns whether a model was pushed in this run."""
    log_file = run_logging.configure(os.path.join(config.output_dir, 'logs'), verbose)
    with _run_environment(config.output_dir):
        from components.trainer.backbones import WeightsUnavailableError, check_available
        from pipeline import run_summary
        from pipeline.tfx_pipeline import create_pipeline, local_ir
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner
        if config.uses_s3():
            import tensorflow_io  # noqa: F401  (registers s3:// with tf.io.gfile)

        try:
            for backbone in config.training().backbones:  # fail now, not after an hour of data processing
                check_available(backbone)
        except WeightsUnavailableError as error:
            logger.error('%s', error)
            sys.exit(2)  # not `raise SystemExit`: see components/storage/s3_startup.py
        if _running_under_tfx_cli_compile():
            LocalDagRunner().run(create_pipeline(config))
            return False
        logger.info('Running pipeline %s on %s (full log: %s)', config.pipeline_name, config.data_root, log_file)
        started = time.time()
        pipeline = create_pipeline(config)
        try:
            LocalDagRunner().run_with_ir(local_ir(pipeline))
        finally:
            summary = run_summary.latest_run(config)
            if summary:
                logger.info('%s', run_summary.format_summary(summary))
        logger.info('Finished in %.0f s. Full log: %s', time.time() - started, log_file)
        return bool(summary and summary.pushed_version)


@contextlib.contextmanager
def _run_environment(output_dir: str):
    """A private temp folder for the duration of a run, removed afterwards.

    Beam, TFX and the Trainer's input cache write temporary files, and not all of them clean
    up; they all go to one folder that is deleted when the run ends.
    """
    base = os.path.join(output_dir, 'tmp') if '://' not in output_dir else None
    if base:
        os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix='run-', dir=base)
    saved_env = {key: os.environ.get(key) for key in ('TMPDIR',)}
    saved_tempdir = tempfile.tempdir
    os.environ['TMPDIR'] = path  # for Beam workers and other child processes
    tempfile.tempdir = path
    try:
        yield path
    finally:
        tempfile.tempdir = saved_tempdir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(path, ignore_errors=True)


def keep_tool_files_out_of_home(config_file: Optional[str], overrides: Sequence[str] = ()) -> None:
    """Keras' settings and weights cache and matplotlib's font cache go under output_dir.

    Keras writes ~/.keras/keras.json as soon as TensorFlow is imported, and matplotlib builds
    ~/.cache/matplotlib on first use; a run should leave nothing in the home folder. Call it
    before TensorFlow is imported (loading the config imports it); child processes inherit
    it. A user's own KERAS_HOME or MPLCONFIGDIR (say, to share downloaded weights between
    output folders) wins.
    """
    output_dir = configured_output_dir(config_file, overrides)
    if not output_dir or '://' in output_dir:
        return
    os.environ.setdefault('KERAS_HOME', os.path.join(output_dir, 'keras'))
    os.environ.setdefault('MPLCONFIGDIR', os.path.join(output_dir, 'matplotlib'))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    gpu_memory.grow_as_needed()  # before TensorFlow is imported; Beam's workers inherit it
    keep_tool_files_out_of_home(args.config, args.overrides)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    os.environ.update(config.storage_environment())  # for this process and Beam's workers
    try:
        run(config, verbose=args.verbose)
    except Exception as error:  # noqa: BLE001  (a failed component: say which, keep the traceback in the log)
        logging.getLogger('traceback').info('pipeline failed', exc_info=True)  # log file only
        logger.error('Pipeline failed: %s: %s', type(error).__name__, error)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
