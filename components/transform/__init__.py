"""Transform: `preprocessing_fn` (image_preprocessing.py), the decoding it shares with serving."""
