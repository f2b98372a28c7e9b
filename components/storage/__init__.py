"""Storage the pipeline's paths may name besides local folders and gs:// (s3:// and MinIO).

s3_startup.py is imported at the start of every Python process of the environment (a .pth
line that `python -m components.storage install` writes), Beam's worker processes and TFX's
Kubeflow entrypoints included: what it mends must be in place before any of them touches S3.
"""

# Set (to 1) in every process of a run whose paths include s3:// (pipeline.config's
# storage_environment): only there does s3_startup take over the exit.
USES_S3_ENV = 'IMAGE_PIPELINE_USES_S3'
