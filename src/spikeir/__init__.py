"""spikeir: energy-efficient image restoration with spiking neural networks."""

__version__ = "0.1.0"
