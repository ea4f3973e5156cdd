"""lensgen: strong gravitational lensing with machine-learned galaxy source models."""

__version__ = "0.1.0"
