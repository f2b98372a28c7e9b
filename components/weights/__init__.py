"""ImageNet weights without internet: torchvision's MobileNetV2 checkpoint converted for Keras.

    python -m components.weights import-torchvision [--out DIR] [--checkpoint FILE]
    python -m components.weights verify [--images DIR]
"""
