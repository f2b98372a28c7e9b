"""The config's `kubernetes:` section as the spec's Kubernetes platform config.

Kubeflow Pipelines reads pod settings that a PipelineSpec cannot express (node selectors,
tolerations, secrets as environment variables) from a second YAML document,
`platforms.kubernetes.deploymentSpec.executors.<executor label>`, each a
`KubernetesExecutorConfig` as kfp-kubernetes writes it. TFX's compiler cannot write it, so it
is built here, with kfp-kubernetes' own message type, so a misspelt field cannot get through.
"""
from __future__ import annotations

from typing import Any, Dict

from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s

from pipeline.config import KubernetesConfig, PodPlacement


def _executor_config(placement: PodPlacement, config: KubernetesConfig) -> k8s.KubernetesExecutorConfig:
    executor = k8s.KubernetesExecutorConfig()
    executor.node_selector.labels.update(placement.node_selector)
    for toleration in placement.tolerations:
        executor.tolerations.append(k8s.Toleration(**toleration.model_dump(exclude_none=True)))
    for secret in config.secrets_as_env:
        executor.secret_as_env.append(k8s.SecretAsEnv(
            secret_name=secret.secret_name,
            key_to_env=[k8s.SecretAsEnv.SecretKeyToEnvMap(secret_key=key, env_var=env)
                        for key, env in secret.keys.items()]))
    return executor


def platform_spec(config: KubernetesConfig, pipeline_spec: Dict[str, Any]) -> Dict[str, Any]:
    """{'platforms': {'kubernetes': ...}} for the tasks the config touches; {} when it touches none."""
    executors = {}
    for task_name, task in pipeline_spec['root']['dag']['tasks'].items():
        placement = config.placement.get(task_name, PodPlacement())
        executor = _executor_config(placement, config)
        if executor.ByteSize():
            label = pipeline_spec['components'][task['componentRef']['name']]['executorLabel']
            executors[label] = json_format.MessageToDict(executor)
    if not executors:
        return {}
    return {'platforms': {'kubernetes': {'deploymentSpec': {'executors': executors}}}}
