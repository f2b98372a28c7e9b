"""Runs the pipeline with its Beam components on a Flink cluster started here, then stops it.

    python -m pipeline.flink --config pipeline/config.yaml [--set key=value ...]
        [--task-managers 2] [--harness process|external]

Starts a standalone Flink session cluster on 127.0.0.1 (pipeline/flink/cluster.py), runs
`pipeline.local_runner` with beam_args pointing at it (the config's own beam_args are
replaced), writes what ran where to output_dir/flink/jobs.json, and stops every process it
started, also when the pipeline fails or the command is interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from pipeline.config import ConfigError, add_config_arguments, load_config
from pipeline.flink.cluster import ClusterError, LocalFlinkCluster
from pipeline.flink.jars import JarsUnavailable


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m pipeline.flink', description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    parser.add_argument('--task-managers', type=int, default=2, help='TaskManager processes (default 2)')
    parser.add_argument('--slots', type=int, default=1, help='task slots per TaskManager (default 1)')
    parser.add_argument('--harness', choices=('external', 'process'), default='process',
                        help='how the Python SDK workers start: as children of each TaskManager (process, '
                             'default) or from Beam\'s worker pool (external: one TaskManager only)')
    parser.add_argument('--rest-port', type=int, default=0, help='Flink\'s REST port and web UI (default: a free one)')
    parser.add_argument('--verbose', action='store_true', help='show the full TFX log on the console')
    return parser.parse_args(argv)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command through the same clean-up as Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    from pipeline import local_runner
    local_runner.keep_tool_files_out_of_home(args.config, args.overrides)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    work_dir = Path(config.output_dir) / 'flink' if '://' not in config.output_dir else None
    if work_dir and work_dir.exists():
        shutil.rmtree(work_dir)  # logs and staged artifacts of an earlier cluster
    try:
        cluster = LocalFlinkCluster(args.task_managers, args.slots, args.harness,
                                    str(work_dir) if work_dir else None, rest_port=args.rest_port)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    os.environ.update(config.storage_environment())  # for the SDK workers too
    _stop_on_sigterm()
    try:
        with cluster:
            code = _run_pipeline(cluster, args, work_dir)
        print('Flink cluster stopped', flush=True)
    except (ClusterError, JarsUnavailable) as error:
        print(f'Flink cluster: {error}', file=sys.stderr)
        return 3
    return code


def _run_pipeline(cluster: LocalFlinkCluster, args: argparse.Namespace, work_dir: Optional[Path]) -> int:
    """local_runner with beam_args for the cluster; then what ran where, into work_dir/jobs.json."""
    from pipeline import local_runner
    beam_args = cluster.beam_args()
    print(f'beam_args: {json.dumps(beam_args)}', flush=True)
    started = time.time()
    try:
        return local_runner.main([*(['--config', args.config] if args.config else []),
                                  *[f'--set={override}' for override in args.overrides],
                                  f'--set=beam_args={json.dumps(beam_args)}',
                                  *(['--verbose'] if args.verbose else [])])
    finally:
        record = {'task_managers': args.task_managers, 'slots': args.slots, 'harness': args.harness,
                  'beam_args': beam_args, 'startup_seconds': cluster.startup_seconds,
                  'pipeline_seconds': time.time() - started,
                  'pids': {name: process.pid for name, process in cluster.processes.items()}}
        try:
            record['jobs'] = cluster.jobs()
        except OSError as error:
            record['jobs_error'] = str(error)
        if work_dir:
            (work_dir / 'jobs.json').write_text(json.dumps(record, indent=1))
        print(f'{len(record.get("jobs", []))} Flink job(s): ' + ', '.join(
            f'{job["state"]} {job["seconds"]:.0f} s on {"+".join(job["task_managers"])}'
            for job in record.get('jobs', [])), flush=True)


if __name__ == '__main__':
    sys.exit(main())
