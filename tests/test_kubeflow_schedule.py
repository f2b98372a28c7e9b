"""`python -m kubeflow.schedule` with the real kfp client against a KFP-API-compatible server."""
import json

import pytest

from kfp_api_server import KfpApiServer
from kubeflow import schedule

CRON = '0 0 2 * * *'


@pytest.fixture
def server():
    with KfpApiServer() as api:
        yield api


def _schedule(server, spec, *extra):
    return schedule.main(['--host', server.url, '--spec', str(spec), '--cron', CRON, *extra])


def test_uploads_the_spec_and_creates_a_recurring_run(server, kubeflow_spec_yaml, capsys):
    assert _schedule(server, kubeflow_spec_yaml, '--experiment', 'nightly') == 0

    [upload] = server.requests_to('POST', '/pipelines/upload')
    assert upload['query']['name'] == 'tiny-test'
    assert upload['body'] == kubeflow_spec_yaml.read_bytes()
    [version_upload] = server.requests_to('POST', '/pipelines/upload_version')
    assert version_upload['query']['name'].startswith('tiny-test-')

    [experiment] = server.requests_to('POST', '/experiments')
    assert experiment['body']['display_name'] == 'nightly'
    [request] = server.requests_to('POST', '/recurringruns')
    body = request['body']
    assert body['trigger'] == {'cron_schedule': {'cron': CRON}}
    assert body['max_concurrency'] == 1 and body['no_catchup'] is True and body['mode'] == 'ENABLE'
    assert server.experiments[body['experiment_id']].display_name == 'nightly'
    assert body['display_name'] == 'tiny-test'
    assert body['runtime_config']['pipeline_root'] == 'gs://test-bucket/out/pipeline_root'
    reference = body['pipeline_version_reference']
    assert server.versions[reference['pipeline_version_id']].display_name == version_upload['query']['name']
    assert 'Trainer' in server.uploaded_specs[reference['pipeline_version_id']].root.dag.tasks
    assert 'Scheduled: tiny-test' in capsys.readouterr().out


def test_scheduling_again_reuses_the_version_and_replaces_the_recurring_run(server, kubeflow_spec_yaml, capsys):
    assert _schedule(server, kubeflow_spec_yaml) == 0
    [first] = server.recurring_runs
    assert schedule.main(['--host', server.url, '--spec', str(kubeflow_spec_yaml), '--interval', '3600']) == 0

    assert len(server.requests_to('POST', '/pipelines/upload')) == 1
    assert len(server.requests_to('POST', '/pipelines/upload_version')) == 1  # same content, same version
    assert len(server.requests_to('POST', '/experiments')) == 1  # found the second time
    [second] = server.recurring_runs  # the first one is gone
    assert second != first
    assert server.requests_to('DELETE', f'/recurringruns/{first}')
    trigger = server.recurring_runs[second].trigger
    assert trigger.periodic_schedule.interval_second == '3600' and trigger.cron_schedule is None
    assert f'Replaced and deleted: tiny-test id {first}' in capsys.readouterr().out


def test_list_and_disable(server, kubeflow_spec_yaml, capsys):
    assert _schedule(server, kubeflow_spec_yaml, '--name', 'nightly-retrain') == 0
    [run_id] = server.recurring_runs
    capsys.readouterr()

    assert schedule.main(['--host', server.url, '--list']) == 0
    listing = capsys.readouterr().out
    assert f'nightly-retrain  id {run_id}  ENABLE  cron "{CRON}"  max_concurrency 1' in listing
    assert '1 recurring run(s)' in listing

    assert schedule.main(['--host', server.url, '--disable', 'nightly-retrain']) == 0
    assert server.requests_to('POST', f'/recurringruns/{run_id}:disable')
    assert server.recurring_runs[run_id].mode == 'DISABLE'
    assert schedule.main(['--host', server.url, '--disable', 'no-such-schedule']) == 1


def test_dry_run_prints_what_it_would_send_and_sends_nothing(server, kubeflow_spec_yaml, capsys):
    assert _schedule(server, kubeflow_spec_yaml, '--dry-run', '--experiment', 'nightly') == 0
    assert server.requests == []
    plan = json.loads(capsys.readouterr().out)
    assert plan['upload']['pipeline'] == 'tiny-test' and plan['experiment'] == 'nightly'
    assert plan['create_recurring_run'] == {
        'job_name': 'tiny-test', 'cron_expression': CRON, 'interval_second': None, 'max_concurrency': 1,
        'no_catchup': True, 'enabled': True, 'pipeline_root': 'gs://test-bucket/out/pipeline_root'}


@pytest.mark.parametrize('args,message', [
    (['--cron', '0 2 * * *', '--spec', 'spec.yaml'], "Kubeflow's cron has 6 fields"),
    (['--cron', CRON, '--spec', 'job.json'], '--cron and --interval need --spec SPEC.yaml'),
    (['--cron', CRON], '--cron and --interval need --spec SPEC.yaml'),
    (['--list', '--dry-run'], '--dry-run goes with --cron or --interval'),
])
def test_command_line_mistakes_are_explained(args, message, capsys):
    with pytest.raises(SystemExit):
        schedule.main(['--host', 'http://127.0.0.1:9', *args])
    assert message in capsys.readouterr().err
