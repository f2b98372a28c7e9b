"""Names of the features that flow between the components."""

# Raw tf.Examples written by ImageExampleGen.
IMAGE_KEY = 'image_raw'      # encoded image bytes
LABEL_KEY = 'label'          # int64 index into the sorted class names
FILENAME_KEY = 'filename'    # path relative to data_root

# Output of Transform's preprocessing_fn (and the model's input).
TRANSFORMED_IMAGE_KEY = 'image'
