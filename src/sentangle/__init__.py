"""sentangle: multimodal sentiment analysis with disentangled representations."""
__version__ = "0.1.0"
