"""spikeir: energy-efficient image restoration with spiking neural networks.

>>> import spikeir
>>> model = spikeir.load_model("spiden-cpu", device="cpu", allow_untrained=True)
>>> type(model).__name__
'SpikingDnCNN'
"""

__version__ = "0.1.0"

from .io import bundled_models, load_model, save_model  # noqa: E402
from .models import PRESETS, build_model  # noqa: E402
from .neurons import IF, LIF, ParametricLIF, record_firing_rates  # noqa: E402

__all__ = [
    "__version__",
    "load_model",
    "save_model",
    "bundled_models",
    "build_model",
    "PRESETS",
    "IF",
    "LIF",
    "ParametricLIF",
    "record_firing_rates",
]
