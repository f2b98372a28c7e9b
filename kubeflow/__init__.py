"""Running the pipeline on Kubeflow Pipelines v2 (and Vertex AI Pipelines).

runner: compiles create_pipeline with TFX's KubeflowV2DagRunner; resources: a component's
configured CPU, memory and GPU as TFX's platform config; schedule: uploads a compiled spec and
manages its recurring runs with kfp's client. The image the components run in is built from
the Dockerfile at the top of the repository.
"""
