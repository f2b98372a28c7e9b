"""Names of the features that flow between the components."""

# Raw tf.Examples written by ImageExampleGen.
IMAGE_KEY = 'image_raw'      # encoded image bytes
LABEL_KEY = 'label'          # int64 index into the sorted class names
FILENAME_KEY = 'filename'    # path relative to data_root
CONTENT_HASH_KEY = 'content_sha256'  # sha256 of the file's bytes (hex); the split is a hash of it
CLASS_NAME_KEY = 'class_name'  # the label's class name, for statistics and drift per class
# What the image looks like (components/example_gen/ingestion/image_facts.py), for StatisticsGen
# and the data validation; nothing trains on them.
IMAGE_HEIGHT_KEY = 'image_height'          # int64 pixels, as Transform decodes it
IMAGE_WIDTH_KEY = 'image_width'            # int64 pixels
IMAGE_CHANNELS_KEY = 'image_channels'      # int64: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
IMAGE_FORMAT_KEY = 'image_format'          # bytes: the source file's format (JPEG, PNG, ...)
IMAGE_FILE_BYTES_KEY = 'image_file_bytes'  # int64: the source file's size
IMAGE_BRIGHTNESS_KEY = 'image_brightness'  # float: mean luma of the visible pixels, 0-255
IMAGE_SATURATION_KEY = 'image_saturation'  # float: mean saturation of the visible pixels, 0-1

# Transform's outputs are LABEL_KEY and one image tensor per backbone, named by the config
# (pipeline.config.BackboneSpec.key: `image`, or `image_<i>_<backbone>` for several).
