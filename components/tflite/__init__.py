"""TFLite models for phones and edge devices, converted from the exported SavedModel's
`from_pixels` signature, checked on the test split and gated against the SavedModel."""
