"""A component's configured resources as the ResourceSpec TFX puts into its container spec.

TFX's Kubeflow v2 step builder copies a component's platform config, a
`PipelineContainerSpec.ResourceSpec`, verbatim into the container it compiles. The fields are
filled the way kfp 2.13's own compiler fills them for `set_cpu_limit`, `set_memory_limit`,
`set_accelerator_type` and `set_accelerator_limit`: Kubernetes quantities as text (read by
Kubeflow Pipelines 2.x) plus the older numeric fields (read by Vertex AI and older backends).
"""
from __future__ import annotations

from kfp.compiler import compiler_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline.config import ComponentResources

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def resource_spec(resources: ComponentResources) -> ResourceSpec:
    spec = ResourceSpec()
    if resources.cpu_limit:
        spec.resource_cpu_limit = resources.cpu_limit
        spec.cpu_limit = compiler_utils._cpu_to_float(resources.cpu_limit)  # noqa: SLF001  (kfp's parser)
    if resources.memory_limit:
        spec.resource_memory_limit = resources.memory_limit
        spec.memory_limit = compiler_utils._memory_to_float(resources.memory_limit)  # noqa: SLF001  (in GB)
    if resources.accelerator_type:
        spec.accelerator.type = spec.accelerator.resource_type = resources.accelerator_type
        spec.accelerator.count = resources.accelerator_count
        spec.accelerator.resource_count = str(resources.accelerator_count)
    return spec
