"""The pipeline's Beam components on a Flink cluster started on this machine (`python -m pipeline.flink`)."""
