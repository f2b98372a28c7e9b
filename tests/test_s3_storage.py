"""s3:// for data_root, pipeline_root and serving_dir, against a real S3 server on 127.0.0.1.

The server is moto's (`moto_server`, installed with the test extra): an S3 API implementation,
started by the fixture on loopback and stopped after the module. What this proves and what it
does not: tensorflow-io's and Beam's S3 clients, TFX and the pipeline work end to end against
an S3 API; MinIO itself (which, unlike moto, checks signatures) is not run here.
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import make_image_folder, tiny_config_values

REPO = Path(__file__).resolve().parent.parent
BUCKET = 'pipeline'
CREDENTIALS = {'AWS_ACCESS_KEY_ID': 'test-key', 'AWS_SECRET_ACCESS_KEY': 'test-secret', 'AWS_REGION': 'us-east-1'}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def endpoint(tmp_path_factory):
    import boto3
    server = Path(sys.executable).with_name('moto_server')
    assert server.exists(), f'{server} missing: the test extra (moto[server]) is not installed'
    port = _free_port()
    log = open(tmp_path_factory.mktemp('moto') / 'moto.log', 'w')
    process = subprocess.Popen([str(server), '-H', '127.0.0.1', '-p', str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(100):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        boto3.client('s3', endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _boto_credentials():
    return {'aws_access_key_id': CREDENTIALS['AWS_ACCESS_KEY_ID'],
            'aws_secret_access_key': CREDENTIALS['AWS_SECRET_ACCESS_KEY'], 'region_name': CREDENTIALS['AWS_REGION']}


def _objects(endpoint, prefix):
    import boto3
    client = boto3.client('s3', endpoint_url=endpoint, **_boto_credentials())
    pages = client.get_paginator('list_objects_v2').paginate(Bucket=BUCKET, Prefix=prefix)
    return {item['Key']: item['Size'] for page in pages for item in page.get('Contents', [])}


def _env(endpoint, uses_s3=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), S3_ENDPOINT=endpoint, AWS_ENDPOINT_URL=endpoint, **CREDENTIALS)
    env.pop('PIPELINE_CONFIG', None)
    if uses_s3:
        env['IMAGE_PIPELINE_USES_S3'] = '1'
    return env


WRITE_THEN_EXIT_3 = """
import sys
import tensorflow as tf
import tensorflow_io  # noqa: F401  (registers s3://)
with tf.io.gfile.GFile('s3://pipeline/exit-test/data.bin', 'wb') as f:
    f.write(b'x' * (5 * 2**20 + 7))
sys.exit(3)
"""


def test_a_process_that_used_s3_keeps_its_exit_status(endpoint):
    """Without the guard (components/storage/s3_startup.py), tensorflow-io aborts the process: 134."""
    guarded = subprocess.run([sys.executable, '-c', WRITE_THEN_EXIT_3], env=_env(endpoint), capture_output=True,
                             text=True, timeout=300)
    assert guarded.returncode == 3, guarded.stderr[-3000:]
    assert _objects(endpoint, 'exit-test/') == {'exit-test/data.bin': 5 * 2**20 + 7}  # written in full
    unguarded = subprocess.run([sys.executable, '-c', WRITE_THEN_EXIT_3], env=_env(endpoint, uses_s3=False),
                               capture_output=True, text=True, timeout=300)
    assert unguarded.returncode == -6 or unguarded.returncode == 134, unguarded.returncode


def _upload_images(endpoint, folder: Path, prefix: str):
    import boto3
    client = boto3.client('s3', endpoint_url=endpoint, **_boto_credentials())
    for path in folder.rglob('*'):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f'{prefix}/{path.relative_to(folder).as_posix()}')


def _local_runner(config_path, env, *overrides):
    args = [sys.executable, '-m', 'pipeline.local_runner', '--config', str(config_path)]
    for item in overrides:
        args += ['--set', item]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return result


def test_the_pipeline_on_s3_pushes_there_and_gates_against_it(endpoint, tmp_path):
    _upload_images(endpoint, make_image_folder(tmp_path / 'images', per_class=12), 'images')
    config_path = tmp_path / 'config.yaml'
    config_path.write_text(yaml.safe_dump(tiny_config_values(
        f's3://{BUCKET}/images', tmp_path / 'output', pipeline_name='s3-test',
        pipeline_root=f's3://{BUCKET}/pipeline_root', serving_dir=f's3://{BUCKET}/serving', s3_endpoint=endpoint,
        split_ratios={'train': 60, 'eval': 20, 'test': 20})))
    env = _env(endpoint)
    del env['IMAGE_PIPELINE_USES_S3'], env['S3_ENDPOINT'], env['AWS_ENDPOINT_URL']  # the config's job

    first = _local_runner(config_path, env)
    pushed = {key for key in _objects(endpoint, 'serving/') if key.endswith('/saved_model.pb')}
    assert len(pushed) == 1, first.stderr[-3000:]
    assert _objects(endpoint, 'pipeline_root/'), 'no artifact written to s3://'

    second = _local_runner(config_path, env, 'min_accuracy=1.01')
    assert 'Baseline: the served model s3://pipeline/serving/' in second.stderr + _log(tmp_path)
    assert 'gate: FAILED' in second.stderr
    assert {key for key in _objects(endpoint, 'serving/') if key.endswith('/saved_model.pb')} == pushed


def _log(tmp_path) -> str:
    return '\n'.join(p.read_text() for p in (tmp_path / 'output' / 'logs').glob('*.log'))
