"""Uploads a compiled pipeline to Kubeflow Pipelines and runs it on a schedule, with kfp's client.

    python -m kubeflow.schedule --host URL --spec SPEC.yaml --cron "0 0 2 * * *" [--dry-run]
    python -m kubeflow.schedule --host URL --spec SPEC.yaml --interval 86400
    python -m kubeflow.schedule --host URL --list
    python -m kubeflow.schedule --host URL --disable NAME

Scheduling uploads the spec as a pipeline version named after its content (uploading the same
spec twice reuses the version), makes sure the experiment exists, and creates the recurring run
with max_concurrency=1 and no catch-up: two runs at once would race for the same baseline
model and push directory, and a cluster that was down for a week should train once, not seven
times. Kubeflow's API cannot update a recurring run, so one that has the same name in the
experiment is replaced: the new one is created first, then the old one deleted.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import yaml

MAX_CONCURRENCY = 1
# Kubeflow's cron (robfig/cron) starts with a seconds field: "0 0 2 * * *" is 02:00 every day.
CRON_FIELDS = 6
_PAGE_SIZE = 100


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Everything a schedule command sends, derived from the spec and the command line."""

    spec_path: Path
    pipeline_name: str
    version_name: str
    experiment: str
    recurring_run_name: str
    pipeline_root: Optional[str]
    cron: Optional[str] = None
    interval_seconds: Optional[int] = None

    def recurring_run_arguments(self) -> Dict[str, Any]:
        """The arguments of kfp.Client.create_recurring_run, apart from the server's ids."""
        return dict(job_name=self.recurring_run_name, cron_expression=self.cron,
                    interval_second=self.interval_seconds, max_concurrency=MAX_CONCURRENCY,
                    no_catchup=True, enabled=True, pipeline_root=self.pipeline_root)


def read_schedule(spec_path: Path, cron: Optional[str], interval_seconds: Optional[int],
                  experiment: Optional[str], name: Optional[str]) -> Schedule:
    content = spec_path.read_bytes()
    spec = yaml.safe_load(content)
    if not isinstance(spec, dict) or 'pipelineInfo' not in spec:
        raise ValueError(f'{spec_path} is not a pipeline spec; compile one with python -m kubeflow.runner '
                         f'--output SPEC.yaml')
    pipeline_name = spec['pipelineInfo']['name']
    return Schedule(
        spec_path=spec_path, pipeline_name=pipeline_name,
        version_name=f'{pipeline_name}-{hashlib.sha256(content).hexdigest()[:12]}',
        experiment=experiment or pipeline_name, recurring_run_name=name or pipeline_name,
        pipeline_root=spec.get('defaultPipelineRoot'), cron=cron, interval_seconds=interval_seconds)


def describe(schedule: Schedule) -> str:
    """What `apply` would send, for --dry-run."""
    return json.dumps({
        'upload': {'spec': str(schedule.spec_path), 'pipeline': schedule.pipeline_name,
                   'version': schedule.version_name,
                   'note': 'the pipeline is created if missing, the version only if missing'},
        'experiment': schedule.experiment,
        'create_recurring_run': schedule.recurring_run_arguments(),
        'then_delete': f'older recurring runs named {schedule.recurring_run_name!r} in that experiment',
    }, indent=2)


def apply(client, schedule: Schedule, namespace: Optional[str] = None):
    """Uploads, creates the recurring run, deletes the ones it replaces; returns the new one."""
    pipeline_id = client.get_pipeline_id(schedule.pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(schedule.spec_path), pipeline_name=schedule.pipeline_name,
                                             namespace=namespace).pipeline_id
    version = _version_named(client, pipeline_id, schedule.version_name)
    if version is None:
        version = client.upload_pipeline_version(str(schedule.spec_path), schedule.version_name,
                                                 pipeline_id=pipeline_id)
    experiment = client.create_experiment(schedule.experiment, namespace=namespace)  # gets it if it exists
    replaced = list(_recurring_runs(client, experiment_id=experiment.experiment_id,
                                    name=schedule.recurring_run_name))
    created = client.create_recurring_run(
        experiment_id=experiment.experiment_id, pipeline_id=pipeline_id,
        version_id=version.pipeline_version_id, **schedule.recurring_run_arguments())
    for old in replaced:
        client.delete_recurring_run(old.recurring_run_id)
    return created, replaced


def _name_filter(name: str) -> str:
    return json.dumps({'predicates': [{'operation': 'EQUALS', 'key': 'display_name', 'stringValue': name}]})


def _version_named(client, pipeline_id: str, name: str):
    found = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_name_filter(name))
    return (found.pipeline_versions or [None])[0]


def _recurring_runs(client, experiment_id: Optional[str] = None, namespace: Optional[str] = None,
                    name: Optional[str] = None) -> Iterator[Any]:
    page_token = ''
    while True:
        page = client.list_recurring_runs(page_token=page_token, page_size=_PAGE_SIZE, experiment_id=experiment_id,
                                          namespace=namespace, filter=_name_filter(name) if name else None)
        yield from page.recurring_runs or []
        page_token = page.next_page_token
        if not page_token:
            return


def format_recurring_run(run) -> str:
    trigger = run.trigger
    if trigger and trigger.cron_schedule and trigger.cron_schedule.cron:
        when = f'cron "{trigger.cron_schedule.cron}"'
    elif trigger and trigger.periodic_schedule and trigger.periodic_schedule.interval_second:
        when = f'every {trigger.periodic_schedule.interval_second} s'
    else:
        when = 'no trigger'
    version = run.pipeline_version_reference.pipeline_version_id if run.pipeline_version_reference else '-'
    return (f'{run.display_name}  id {run.recurring_run_id}  {run.mode}  {when}  '
            f'max_concurrency {run.max_concurrency}  experiment {run.experiment_id}  version {version}')


def disable(client, name: str, experiment_id: Optional[str], namespace: Optional[str]) -> List[Any]:
    runs = list(_recurring_runs(client, experiment_id=experiment_id, namespace=namespace, name=name))
    for run in runs:
        client.disable_recurring_run(run.recurring_run_id)
    return runs


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--host', required=True, help='Kubeflow Pipelines API, e.g. http://localhost:8080')
    parser.add_argument('--namespace', help='Kubernetes namespace (multi-user Kubeflow)')
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument('--cron', help='6-field cron with seconds first: "0 0 2 * * *" is 02:00 daily')
    action.add_argument('--interval', type=int, metavar='SECONDS', help='run every SECONDS seconds')
    action.add_argument('--list', action='store_true', help='list recurring runs')
    action.add_argument('--disable', metavar='NAME', help='disable the recurring runs named NAME')
    parser.add_argument('--spec', type=Path, help='SPEC.yaml from python -m kubeflow.runner (with --cron/--interval)')
    parser.add_argument('--experiment', help='experiment name (default: the pipeline name; --list/--disable: all)')
    parser.add_argument('--name', help='name of the recurring run (default: the pipeline name)')
    parser.add_argument('--dry-run', action='store_true', help='print what would be sent and contact no server')
    args = parser.parse_args(argv)
    scheduling = args.cron is not None or args.interval is not None
    if scheduling and (args.spec is None or args.spec.suffix not in ('.yaml', '.yml')):
        parser.error('--cron and --interval need --spec SPEC.yaml (Kubeflow takes the YAML spec; '
                     'the JSON one is for Vertex AI)')
    if args.cron is not None and len(args.cron.split()) != CRON_FIELDS:
        parser.error(f'--cron {args.cron!r}: Kubeflow\'s cron has {CRON_FIELDS} fields, seconds first '
                     f'("0 0 2 * * *" is 02:00 every day)')
    if args.interval is not None and args.interval < 1:
        parser.error('--interval must be at least 1 second')
    if args.dry_run and not scheduling:
        parser.error('--dry-run goes with --cron or --interval')
    return args


def _client(args: argparse.Namespace):
    import kfp
    warnings.filterwarnings('ignore', message='This client only works with Kubeflow Pipeline', category=FutureWarning)
    kwargs = {'namespace': args.namespace} if args.namespace else {}
    return kfp.Client(host=args.host, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    if args.cron is not None or args.interval is not None:
        try:
            schedule = read_schedule(args.spec, args.cron, args.interval, args.experiment, args.name)
        except (OSError, ValueError, yaml.YAMLError) as error:
            print(f'--spec: {error}', file=sys.stderr)
            return 2
        if args.dry_run:
            print(describe(schedule))
            return 0
        created, replaced = apply(_client(args), schedule, args.namespace)
        print(f'Scheduled: {format_recurring_run(created)}')
        for old in replaced:
            print(f'Replaced and deleted: {old.display_name} id {old.recurring_run_id}')
        return 0

    client = _client(args)
    experiment_id = (client.get_experiment(experiment_name=args.experiment, namespace=args.namespace).experiment_id
                     if args.experiment else None)
    if args.list:
        runs = list(_recurring_runs(client, experiment_id=experiment_id, namespace=args.namespace))
        for run in runs:
            print(format_recurring_run(run))
        print(f'{len(runs)} recurring run(s)')
        return 0
    runs = disable(client, args.disable, experiment_id, args.namespace)
    if not runs:
        print(f'No recurring run named {args.disable!r}', file=sys.stderr)
        return 1
    for run in runs:
        print(f'Disabled: {run.display_name} id {run.recurring_run_id}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
