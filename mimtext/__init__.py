"""mimtext: probabilistic sentence autoencoders (sentenceMIM, sentence VAEs, HSVAE) in JAX."""

__version__ = "0.1.0"
