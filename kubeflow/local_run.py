"""Runs the compiled Kubeflow pipeline on this machine: kfp.local, every step in its container.

    python -m kubeflow.local_run --config FILE [--set key=value ...] [--spec SPEC.yaml]

Compiles the pipeline exactly as `python -m kubeflow.runner` does (same create_pipeline, same
image, same spec), then hands that YAML to Kubeflow Pipelines' own local orchestrator
(`kfp.local` with its DockerRunner), which starts one container per step in DAG order, as a
cluster's launcher would. kfp.local mounts one folder of this machine into every container, at
the same path: pipeline_root. So data_root and serving_dir must be inside it, and outputs land
under pipeline_root/<pipeline name>-<timestamp>/<step>/.

One change to kfp.local is needed, and made here: it hands a step's output artifacts to the
next steps as the generic `system.Artifact`, dropping their declared type, where the real
launcher takes the type from ML Metadata; TFX's container entrypoint then cannot tell an
Examples artifact from a Model. `_keep_artifact_types` carries the declared type across.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline import run_logging  # noqa: F401  (quiets TensorFlow before it is imported)
from pipeline.config import ConfigError, PipelineConfig, add_config_arguments, load_config


def _keep_artifact_types() -> None:
    """Makes kfp.local pass each artifact on with the type its producer declared."""
    from kfp.local import executor_input_utils, executor_output_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    if getattr(executor_output_utils, '_types_kept', False):
        return
    to_dsl = executor_output_utils.runtime_artifact_to_dsl_artifact
    to_list = executor_input_utils.dsl_artifact_to_artifact_list

    def runtime_artifact_to_dsl_artifact(runtime_artifact):
        artifact = to_dsl(runtime_artifact)
        artifact.declared_type = pipeline_spec_pb2.ArtifactTypeSchema()
        artifact.declared_type.CopyFrom(runtime_artifact.type)
        return artifact

    def dsl_artifact_to_artifact_list(artifact):
        artifact_list = to_list(artifact)
        if getattr(artifact, 'declared_type', None) is not None:
            artifact_list.artifacts[0].type.CopyFrom(artifact.declared_type)
        return artifact_list

    executor_output_utils.runtime_artifact_to_dsl_artifact = runtime_artifact_to_dsl_artifact
    executor_input_utils.dsl_artifact_to_artifact_list = dsl_artifact_to_artifact_list
    executor_output_utils._types_kept = True  # noqa: SLF001  (once per process)


def run(config: PipelineConfig, spec: Path) -> None:
    """Compiles config into spec and runs it with kfp.local; raises RuntimeError if a step fails."""
    import kfp
    from kfp import local

    from kubeflow.runner import compile_pipeline

    root = os.path.abspath(config.pipeline_root)
    compile_pipeline(config, spec, local_root=root)
    _keep_artifact_types()
    local.init(runner=local.DockerRunner(), pipeline_root=root, raise_on_error=True)
    kfp.components.load_component_from_file(str(spec))()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_config_arguments(parser)
    parser.add_argument('--spec', type=Path, help='where to write the compiled YAML (default: in pipeline_root)')
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        spec = args.spec or Path(config.pipeline_root) / f'{config.pipeline_name}.yaml'
        run(config, spec)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except RuntimeError as error:  # kfp.local: a step failed; its log was printed above
        print(f'error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
