"""mlattack: make multi-label image classifiers show many labels, and measure how often attacks succeed."""

__version__ = "0.1.0"
