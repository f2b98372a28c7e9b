"""Names of the features that flow between the components."""

# Raw tf.Examples written by ImageExampleGen.
IMAGE_KEY = 'image_raw'      # encoded image bytes
LABEL_KEY = 'label'          # int64 index into the sorted class names
FILENAME_KEY = 'filename'    # path relative to data_root
CONTENT_HASH_KEY = 'content_sha256'  # sha256 of the file's bytes (hex); the split is a hash of it

# Transform's outputs are LABEL_KEY and one image tensor per backbone, named by the config
# (pipeline.config.BackboneSpec.key: `image`, or `image_<i>_<backbone>` for several).
