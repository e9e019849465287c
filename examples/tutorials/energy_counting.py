"""Tutorial: how spikeir counts operations and energy, and what it leaves out.

Run it as ``python examples/tutorials/energy_counting.py``.

``spikeir.energy.measure`` runs the real model with hooks. For every layer it records the dense
multiply-accumulates (MACs) of an ANN, whether the layer's input *measured* as binary spikes,
threshold-scaled spikes or real values, and the measured input firing rate. A layer fed by spikes
does synaptic operations (SOPs = dense MACs x input rate x T), each an accumulate (AC); a layer fed
real values (the first convolution, shortcut paths, attention) does MACs at every time step.

Two energy models turn counts into joules:

* ``ops_45nm``: the papers' convention, MAC 4.6 pJ and AC 0.9 pJ at 45 nm, operations only;
* ``memory_aware``: adds weight, membrane-potential and activation traffic to SRAM, which the
  operation count leaves out and which dominates on real hardware (an SNN reads and writes each
  membrane potential at every time step).

What neither counts: DRAM traffic, control logic, the cost of producing the input, and any
hardware-specific sparsity machinery. The constants live in ``spikeir.energy.EnergyModel``.
"""

from __future__ import annotations

import torch

import spikeir
from spikeir.data import add_test_noise, builtin_images
from spikeir.energy import EnergyModel, format_report, measure

model = spikeir.load_model("spiden-s25")
_, clean = builtin_images("heldout", gray=True)[0]
noisy = torch.from_numpy(add_test_noise(clean[:128, :128], 25.0, seed=0)).float()[None]  # [1, H, W]

report = measure(model, [noisy], name="spiden-s25")  # the ANN twin is measured on the same image
print(format_report(report))

e = report.energy()
ops, mem = e["ops_45nm"], e["memory_aware"]
print(f"\n45 nm operations: SNN {ops['snn_j'] * 1e6:.2f} uJ vs ANN {ops['ann_j'] * 1e6:.2f} uJ")
print(f"memory-aware:     SNN {mem['snn_j'] * 1e6:.2f} uJ vs ANN {mem['ann_j'] * 1e6:.2f} uJ")

# the same counts under other constants, e.g. a cheaper accumulate
cheap = report.priced(EnergyModel(e_ac=0.1)).energy()  # re-prices the counts, runs nothing
print(f"with AC = 0.1 pJ: SNN {cheap['ops_45nm']['snn_j'] * 1e6:.2f} uJ")
