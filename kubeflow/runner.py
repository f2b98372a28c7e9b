"""Compiles the pipeline for Kubeflow Pipelines v2 with TFX's KubeflowV2DagRunner.

    python -m kubeflow.runner --config FILE --output SPEC.yaml|SPEC.json [--set key=value ...]

The same `create_pipeline` and config file as local runs. `.yaml` writes the PipelineSpec that
open-source Kubeflow Pipelines takes (upload it in the UI or with `python -m kubeflow.schedule`);
`.json` writes the PipelineJob that Vertex AI Pipelines takes. Every component runs in
`container_image`; the components named in `component_resources` get those resources, and the
`kubernetes:` section becomes the YAML's Kubernetes platform config (Vertex AI has none).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from components import gpu_memory
from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import ConfigError, PipelineConfig, add_config_arguments, load_config

SPEC_SUFFIXES = ('.yaml', '.yml', '.json')
# TFX's Kubeflow runner imports google-cloud-aiplatform, which warns about its storage client.
warnings.filterwarnings('ignore', message='Support for google-cloud-storage', category=FutureWarning)


def compile_pipeline(config: PipelineConfig, output: Path, local_root: Optional[str] = None) -> Dict[str, Any]:
    """Writes the compiled pipeline to output and returns the PipelineJob as a dict.

    local_root: compile for kfp.local's containers on this machine (kubeflow.local_run), which
    see this one folder of it; otherwise for a cluster.
    """
    from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import (KubeflowV2DagRunner,
                                                                      KubeflowV2DagRunnerConfig)

    from kubeflow.platform import platform_spec
    from kubeflow.resources import resource_spec
    from pipeline.tfx_pipeline import UNCACHED_NODES, create_pipeline

    config.check_runs_on_kubeflow(local_root)
    pipeline = create_pipeline(config, for_kubeflow=True)
    for component in pipeline.components:
        if component.id in config.component_resources:
            component.with_platform_config(resource_spec(config.component_resources[component.id]))

    # Pipeline spec schema 2.1 (parameters as `runtimeValue.constant`), the form kfp 2's own
    # compiler emits and every KFP 2.x backend, kfp.local and Vertex AI read; TFX's default, 2.0
    # (`constantValue`), is refused by kfp.local ("Expected constant.").
    runner = KubeflowV2DagRunner(KubeflowV2DagRunnerConfig(default_image=config.container_image,
                                                           use_pipeline_spec_2_1=True))
    job = runner.run(pipeline, write_out=False)
    for node_id in UNCACHED_NODES:  # their result depends on more than their inputs
        job['pipelineSpec']['root']['dag']['tasks'][node_id].pop('cachingOptions', None)
    storage_env = [{'name': name, 'value': value} for name, value in sorted(config.storage_environment().items())]
    growth_env = [{'name': name, 'value': value} for name, value in sorted(gpu_memory.growth_environment().items())]
    trainer_executor = _executor_label(job['pipelineSpec'], 'Trainer')
    for label, executor in job['pipelineSpec']['deploymentSpec']['executors'].items():
        if 'container' not in executor:
            continue
        # Every step reads or writes the storage; all but the Trainer, which has its GPUs to
        # itself, take GPU memory as needed (components/gpu_memory.py).
        env = storage_env + (growth_env if label != trainer_executor else [])
        if env:
            executor['container'].setdefault('env', []).extend(env)
    # TFX puts the pipeline root only into the PipelineJob's runtime config, which a YAML spec
    # does not have; as the spec's default, Kubeflow uses it for runs created from the YAML too.
    job['pipelineSpec']['defaultPipelineRoot'] = config.pipeline_root
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, 'w') as f:
        if output.suffix == '.json':
            json.dump(job, f, indent=1, sort_keys=True)
        else:
            f.write(f'# {config.pipeline_name}: compiled by kubeflow.runner with '
                    f'{job["pipelineSpec"]["sdkVersion"]}; image {config.container_image}\n')
            f.write(''.join(f'# {line}\n' for line in trainer_devices_note(config)))
            # The Kubernetes settings are a second document, as kfp's compiler writes them.
            platform = platform_spec(config.kubernetes, job['pipelineSpec'])
            yaml.safe_dump_all([job['pipelineSpec']] + ([platform] if platform else []), f, sort_keys=True)
    return job


def _executor_label(pipeline_spec: Dict[str, Any], task: str) -> str:
    component = pipeline_spec['root']['dag']['tasks'][task]['componentRef']['name']
    return pipeline_spec['components'][component]['executorLabel']


def trainer_devices_note(config: PipelineConfig) -> List[str]:
    """What the Trainer will do with the GPUs it requests, and the other steps with theirs."""
    from components.trainer.devices import on_a_node
    resources = config.component_resources.get('Trainer')
    gpus = resources.accelerator_count if resources and resources.accelerator_type else 0
    where = f'{gpus} x {resources.accelerator_type} on one node' if gpus else 'no GPU requested'
    return ([f'Trainer ({where}): {line}' for line in on_a_node(config, gpus, config.batch_size)] +
            [f'Every other step: {gpu_memory.GROWTH_ENV}=true, so it takes GPU memory as needed and steps '
             f'can share a GPU'])


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    parser.add_argument('--output', required=True, type=Path,
                        help='SPEC.yaml for Kubeflow Pipelines, SPEC.json for Vertex AI Pipelines')
    args = parser.parse_args(argv)
    if args.output.suffix not in SPEC_SUFFIXES:
        parser.error(f'--output must end in {", ".join(SPEC_SUFFIXES)}, not {args.output.name!r}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    try:
        job = compile_pipeline(load_config(args.config, args.overrides), args.output)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    tasks = job['pipelineSpec']['root']['dag']['tasks']
    print(f'Wrote {args.output}: {len(tasks)} tasks, pipeline root '
          f'{job["pipelineSpec"]["defaultPipelineRoot"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
