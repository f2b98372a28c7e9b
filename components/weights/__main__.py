"""`python -m components.weights`: the command line of torchvision.py."""
import sys

from components.weights.torchvision import main

sys.exit(main())
