"""Tutorial: distil a small spiking student from an ANN teacher.

Run it as ``python examples/tutorials/distill_student.py`` (``SPIKEIR_TUTORIAL_TINY=1``: seconds).

The teacher is the bundled ANN ``dncnn-s25`` (depth 10, width 32). The student is a SpikingDnCNN
of width 16 (about a quarter of the teacher's parameters). A ``distill:`` section in the recipe
pairs teacher layers with student layers by name (``spikeir.distill`` lists the valid names when
one is wrong); 1x1 adapters map the student's time-averaged spikes to the teacher's channels, and
the hint loss is added to the reconstruction loss with a weight that can decay over training.
The adapters are trained with the student but not exported: ``model.safetensors`` is the student.

Distillation is not guaranteed to help: our own 1000-step experiment at hint weight 0.1 (README,
``benchmarks/results/distill.json``) ended 0.44 dB *below* the plain student. Measure before
you rely on it; a zero hint weight gives the baseline under the same recipe.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from spikeir.config import load_config
from spikeir.io import bundled_models, load_model
from spikeir.train import train

TINY = os.environ.get("SPIKEIR_TUTORIAL_TINY") == "1"
work = Path(tempfile.mkdtemp(prefix="spikeir-distill-"))

cfg = load_config(None)
cfg["model"] = {"name": "spiking_dncnn", "in_channels": 1, "depth": 10, "width": 16, "T": 4,
                "neuron_kwargs": {"v_init": "half"}}
cfg["data"].update({"train": "builtin:train", "val": "builtin:val", "patch": 32 if TINY else 40,
                    "batch_size": 4 if TINY else 16, "val_crop": 64 if TINY else 256})
cfg["train"].update({"steps": 3 if TINY else 1000, "log_every": 1 if TINY else 25, "val_every": 1000,
                     "ckpt_every": 1000})
cfg["distill"] = {
    "teacher": str(bundled_models()["dncnn-s25"]),
    "hints": {"net.4": "body.1", "net.13": "body.7"},  # teacher layer -> student layer
    "hint_weight": 0.1,
    "hint_schedule": "cosine",  # decays to 0 by the end of training
}
result = train(cfg, work / "student", device="cpu", progress=not TINY)
terms = [json.loads(x)["terms"] for x in (work / "student" / "log.jsonl").read_text().splitlines() if '"terms"' in x]
for label, t in (("first step", terms[0]), ("last step", terms[-1])):
    print(f"{label}: recon {t['recon']:.4f}, hint {t['hint']:.4f} (weight {t['hint_weight']:.3f})")
student = load_model(work / "student" / "model.safetensors")
teacher = load_model("dncnn-s25")
n_s, n_t = (sum(p.numel() for p in m.parameters()) for m in (student, teacher))
print(f"student {n_s:,} parameters = {n_s / n_t:.0%} of the teacher's {n_t:,}; "
      f"validation PSNR {result['mean']['psnr']:.2f} dB")
