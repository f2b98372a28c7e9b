"""Kubeflow Pipelines' own backend on the compiled spec: `kubeflow/argo_check`.

The KFP API server only takes an upload, and only creates a run, if its backend can turn the
spec into an Argo Workflow; kfp's Python types accept specs it cannot. `argo-check` runs that
server code, from the kubeflow/pipelines release pinned in kubeflow/argo_check/go.mod, on the
YAML `python -m kubeflow.runner` writes. It is built with Go: without `go` these tests skip,
except under CI (`CI` set), where they fail.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import kubeflow_config_values

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / 'kubeflow' / 'argo_check' / 'build.sh'

# Each case changes one thing from conftest's Kubeflow config without component_resources.
CASES = {
    'default': {},
    'ensemble': {'backbones': ['mobilenet_v2', {'name': 'efficientnet_b0', 'weights': 'imagenet'}]},
    # conftest's own resources (the Trainer on one nvidia.com/gpu, limits on Transform), the
    # Trainer on A100 nodes (node selector, toleration), S3 credentials from a secret everywhere.
    'trainer_gpu': {
        'component_resources': kubeflow_config_values()['component_resources'],
        'kubernetes': {
            'placement': {'Trainer': {'node_selector': {'nvidia.com/gpu.product': 'NVIDIA-A100-SXM4-40GB'},
                                      'tolerations': [{'key': 'nvidia.com/gpu', 'operator': 'Exists',
                                                       'effect': 'NoSchedule'}]}},
            'secrets_as_env': [{'secret_name': 's3-credentials', 'keys': {'accesskey': 'AWS_ACCESS_KEY_ID'}}]},
    },
    # The Trainer on a two-GPU node (MirroredStrategy, see the spec's header), every other step
    # with GPU memory growth in its environment.
    'two_gpus': {'component_resources': {'Trainer': {'accelerator_type': 'nvidia.com/gpu', 'accelerator_count': 2}}},
    's3_storage': {'data_root': 's3://bucket/images', 'output_dir': 's3://bucket/out',
                   's3_endpoint': 'http://minio-service.kubeflow:9000'},
    # TFX's Tuner (a container step) before the Trainer, which takes its best_hyperparameters,
    # and ModelReport's optional tuner_results input connected.
    'tuning': {'tuning': {'head_trials': 2, 'fine_tune_trials': 1},
               'component_resources': {'Tuner': {'cpu_limit': 4, 'memory_limit': '16G'}}},
}


@pytest.fixture(scope='module')
def argo_check() -> str:
    """The argo-check binary: build.sh builds it once and caches it across sessions."""
    if shutil.which('go') is None:
        reason = 'go is not installed: kubeflow/argo_check (the KFP backend compiler check) is built with it'
        if os.environ.get('CI'):
            pytest.fail(f'{reason}; CI is set, so it must be installed', pytrace=False)
        pytest.skip(reason)
    build = subprocess.run(['bash', str(BUILD_SCRIPT)], capture_output=True, text=True)
    assert build.returncode == 0, f'{BUILD_SCRIPT} failed:\n{build.stderr}'
    return build.stdout.splitlines()[-1]


def _run(argo_check, spec_path: Path, workflow_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([argo_check, str(spec_path), '--out', str(workflow_path)], capture_output=True, text=True)


@pytest.mark.parametrize('case', CASES)
def test_kfp_backend_compiles_the_spec_to_an_argo_workflow(case, argo_check, tmp_path):
    config_path, spec_path = tmp_path / 'config.yaml', tmp_path / 'spec.yaml'
    config_path.write_text(yaml.safe_dump(kubeflow_config_values(**{'component_resources': {}, **CASES[case]})))
    compiled = subprocess.run([sys.executable, '-m', 'kubeflow.runner', '--config', str(config_path),
                               '--output', str(spec_path)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr

    checked = _run(argo_check, spec_path, tmp_path / 'workflow.yaml')
    assert checked.returncode == 0, f'Kubeflow Pipelines would refuse {case} spec:\n{checked.stderr}'
    workflow = yaml.safe_load((tmp_path / 'workflow.yaml').read_text())
    assert workflow['kind'] == 'Workflow'
    templates = {template['name']: template for template in workflow['spec']['templates']}
    dag_tasks = {task['name']: task for template in templates.values()
                 for task in template.get('dag', {}).get('tasks', [])}
    for task in next(yaml.safe_load_all(spec_path.read_text()))['root']['dag']['tasks']:
        assert task in dag_tasks and dag_tasks[task]['template'] in templates, task
    text = (tmp_path / 'workflow.yaml').read_text()
    if case == 'tuning':  # each task's driver waits for its producers
        assert 'Tuner.Succeeded' in dag_tasks['Trainer-driver']['depends']
        assert 'Tuner.Succeeded' in dag_tasks['ModelReport-driver']['depends']
        assert 'tfx.components.tuner.executor.Executor' in text
    if case == 'two_gpus':
        assert 'nvidia.com/gpu' in text and 'TF_FORCE_GPU_ALLOW_GROWTH' in text
    if case == 'trainer_gpu':
        assert 'nvidia.com/gpu' in text
        assert len(list(yaml.safe_load_all(spec_path.read_text()))) == 2  # the platform document went in
        assert 'NVIDIA-A100-SXM4-40GB' in text and 's3-credentials' in text


def _tiny_spec(schema_version='2.1.0', executor=None) -> dict:
    """A one-task PipelineSpec; its executor is a container unless given."""
    executor = executor or {'container': {'image': 'busybox', 'command': ['true']}}
    return {
        'pipelineInfo': {'name': 'tiny'}, 'schemaVersion': schema_version, 'sdkVersion': 'hand-written',
        'components': {'comp-step': {'executorLabel': 'exec-step'}},
        'deploymentSpec': {'executors': {'exec-step': executor}},
        'root': {'dag': {'tasks': {'step': {'componentRef': {'name': 'comp-step'}, 'taskInfo': {'name': 'step'}}}}},
    }


@pytest.mark.parametrize('spec,refusal', [
    (_tiny_spec(schema_version='2.0.0'), 'KFP only supports schema version 2.1.0'),
    (_tiny_spec(executor={'resolver': {'outputArtifactQueries': {}}}), 'non-container and non-importer executor'),
    (None, 'unknown template format'),  # a PlatformSpec alone
])
def test_argo_check_refuses_what_kfp_refuses(argo_check, tmp_path, spec, refusal):
    """Proof the check is real: the refusals the KFP server makes, with its own messages."""
    spec_path = tmp_path / 'spec.yaml'
    spec_path.write_text(yaml.safe_dump(spec) if spec else 'platforms: {kubernetes: {}}\n')
    checked = _run(argo_check, spec_path, tmp_path / 'workflow.yaml')
    assert checked.returncode == 1 and refusal in checked.stderr, checked.stderr
    assert not (tmp_path / 'workflow.yaml').exists()


def test_argo_check_accepts_a_container_task_and_its_kubernetes_platform_spec(argo_check, tmp_path):
    spec_path = tmp_path / 'spec.yaml'
    platform = {'platforms': {'kubernetes': {'deploymentSpec': {'executors': {'exec-step': {
        'nodeSelector': {'labels': {'cloud.google.com/gke-accelerator': 'nvidia-tesla-t4'}}}}}}}}
    spec_path.write_text(yaml.safe_dump_all([_tiny_spec(), platform]))
    checked = _run(argo_check, spec_path, tmp_path / 'workflow.yaml')
    assert checked.returncode == 0, checked.stderr
    # The second YAML document reached the compiler as the kubernetes platform spec.
    assert 'nvidia-tesla-t4' in (tmp_path / 'workflow.yaml').read_text()
