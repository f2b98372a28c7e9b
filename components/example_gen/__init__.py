"""ImageExampleGen: folders of images to tf.Examples (component.py, executor.py, ingestion/)."""
