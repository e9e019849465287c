"""Export to ONNX and NIR: the exported files run elsewhere and agree with spikeir.

ONNX files run in ONNX Runtime; NIR graphs run in snnTorch (its own NIR import where it can read
the graph) and in nirtorch's graph executor. Files are also loaded in a subprocess where
``import spikeir`` fails, so they need nothing from this package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from spikeir.cli import main
from spikeir.io import load_model
from spikeir.models import PRESETS, SpikingDnCNN, build_model
from spikeir.neurons import BaseNeuron

SNN_CONFIGS = {
    # the SPIDEN quantiser of the bundled models: IF, soft reset, V_th/2 start, threshold-scaled spikes
    "if-soft-half": {"neuron_kwargs": {"v_init": "half", "v_threshold": 0.6}},
    # ESDNet's neuron: LIF tau 2, hard reset to 0, binary spikes
    "lif-hard": {"neuron": "lif", "neuron_kwargs": {"v_reset": 0.0, "tau": 2.0, "decay_input": False,
                                                    "v_threshold": 0.4, "scale_output": False}},
    "lif-soft-decay-input": {"neuron": "lif", "neuron_kwargs": {"tau": 3.0, "decay_input": True, "v_threshold": 0.3}},
    "if-hard-per-channel": {"neuron_kwargs": {"v_reset": 0.0, "threshold_channels": 6, "v_threshold": 0.5}},
    "plif-hard-half": {"neuron": "plif", "neuron_kwargs": {"v_reset": -0.1, "init_tau": 2.5, "v_init": "half",
                                                           "v_threshold": 0.5}},
}


def small_snn(key: str, seed: int = 0) -> nn.Module:
    """A 4-layer SpikingDnCNN of width 6 with non-trivial BatchNorm statistics and thresholds."""
    torch.manual_seed(seed)
    cfg = {"name": "spiking_dncnn", "in_channels": 1, "depth": 4, "width": 6, "T": 4, **SNN_CONFIGS[key]}
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, BaseNeuron):  # layers with different (per-channel) thresholds
                m.v_threshold.mul_(torch.empty_like(m.v_threshold).uniform_(0.7, 1.3))
    model.spikeir_info = {"model": cfg}
    return model.eval()


class RateCoded(SpikingDnCNN):
    """A user's variant that encodes the input differently: the exporters must not assume the parent's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.tail(self.body(self.head_neuron(self.head(x).expand(self.T, *x.shape[:1], -1, -1, -1)
                                                        * 0.5)).mean(0))


def record_spikes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and every neuron's output ``[T, B, C, H, W]`` as 0/1 spikes."""
    rec: list[torch.Tensor] = []
    hooks = []
    for m in model.modules():
        if isinstance(m, BaseNeuron):
            hooks.append(m.register_forward_hook(lambda mod, i, o: rec.append((o != 0).float())))
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in hooks:
            h.remove()
    return y, rec


def run_without_spikeir(code: str) -> dict:
    """Run ``code`` in a fresh interpreter in which ``import spikeir`` fails; it prints JSON."""
    prelude = "import sys\nsys.modules['spikeir'] = None  # any import of spikeir now raises ImportError\n"
    res = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ ONNX


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package (spikeir[export])")
    return pytest.importorskip("onnxruntime", reason="the ONNX tests run files in onnxruntime (spikeir[export])")


SIZES = [(1, 17, 23), (2, 32, 32), (1, 5, 9)]


@pytest.mark.parametrize("key", ["if-soft-half", "lif-hard", "if-hard-per-channel"])
def test_onnx_snn_spikes_identical_image_close(ort, tmp_path, key):
    from spikeir.export import OnnxRunner, export_onnx

    model = small_snn(key)
    path = export_onnx(model, tmp_path / "m.onnx", spikes=True)
    runner = OnnxRunner(path, threads=1)
    names = [o.name for o in runner.session.get_outputs()]
    assert names[0] == "restored" and len(names) == 1 + 4 - 1  # one spike output per neuron layer
    g = torch.Generator().manual_seed(1)
    for b, h, w in SIZES:
        x = torch.rand(b, 1, h, w, generator=g) * 1.2 - 0.1
        ref, spikes = record_spikes(model, x)
        outs = runner.run(x.numpy())
        assert outs[0].shape == (b, 1, h, w)
        np.testing.assert_allclose(outs[0], ref.numpy(), rtol=0, atol=1e-5)
        assert len(outs) - 1 == len(spikes)
        for s_ref, s_onnx in zip(spikes, outs[1:]):
            assert s_onnx.shape == tuple(s_ref.shape)
            assert np.array_equal((s_onnx != 0), s_ref.numpy() != 0), "spikes differ"
        assert sum(float(s.sum()) for s in spikes) > 0  # the comparison saw spikes, not silence


@pytest.mark.parametrize("preset", ["esdnet-small", "esdnet-small-ann", "ann-twin"])
def test_onnx_esdnet_and_ann_twins(ort, tmp_path, preset):
    from spikeir.export import OnnxRunner, export_onnx

    torch.manual_seed(0)
    if preset == "ann-twin":
        model = build_model({"name": "dncnn", "in_channels": 1, "depth": 4, "width": 6})
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.uniform_(0.5, 2.0)
                    m.running_mean.uniform_(-0.2, 0.2)
        C = 1
    else:
        model = build_model(PRESETS[preset])
        C = 3
    model.eval()
    spiking = preset == "esdnet-small"
    runner = OnnxRunner(export_onnx(model, tmp_path / "m.onnx", spikes=spiking), threads=1)
    g = torch.Generator().manual_seed(2)
    for b, h, w in [(1, 17, 23), (2, 32, 32), (1, 6, 9)]:  # odd sizes: ESDNet pads to a multiple of 4 inside
        x = torch.rand(b, C, h, w, generator=g)
        ref, spikes = record_spikes(model, x)
        outs = runner.run(x.numpy())
        np.testing.assert_allclose(outs[0], ref.numpy(), rtol=0, atol=2e-5)
        for s_ref, s_onnx in zip(spikes, outs[1:]):
            assert np.array_equal(s_onnx != 0, s_ref.numpy() != 0), "spikes differ"
        assert len(outs) - 1 == (len(spikes) if spiking else 0)


def test_onnx_bundled_model_runs_without_spikeir(ort, tmp_path):
    from spikeir.data import add_test_noise, builtin_images
    from spikeir.export import export_onnx

    model = load_model("spiden-s25", "cpu")
    path = export_onnx(model, tmp_path / "spiden.onnx")
    clean = builtin_images("heldout", gray=True)[0][1][:40, :48]
    x = torch.from_numpy(add_test_noise(clean, 25, seed=0)).float()[None, None]
    np.save(tmp_path / "x.npy", x.numpy())
    res = run_without_spikeir(f"""
        import json, numpy as np, onnxruntime as ort
        s = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        y = s.run(None, {{"image": np.load({str(tmp_path / 'x.npy')!r})}})[0]
        np.save({str(tmp_path / 'y.npy')!r}, y)
        meta = s.get_modelmeta().custom_metadata_map
        print(json.dumps({{"T": meta["spikeir.T"], "inputs": [i.name for i in s.get_inputs()]}}))
    """)
    assert res == {"T": str(model.T), "inputs": ["image"]}  # the metadata carries the model's T
    with torch.no_grad():
        ref = model(x).numpy()
    # On real images a few membranes sit within float rounding of the threshold, so a spike may flip
    # under the other runtime's arithmetic (and move the pixels around it); the image stays the same
    # image: most pixels equal, none far off, the same PSNR.
    y = np.load(tmp_path / "y.npy")
    d = np.abs(y - ref)
    assert np.median(d) < 1e-5 and d.max() < 0.05, (np.median(d), d.max())
    ref_clean = clean.astype(np.float64) / 255.0

    def db(a):
        return 10 * np.log10(1.0 / np.mean((np.clip(a[0, 0], 0, 1) - ref_clean) ** 2))

    assert abs(db(y) - db(ref)) < 0.02, (db(y), db(ref))


def test_onnx_refuses_unsupported_models_and_overwrites(ort, tmp_path):
    from spikeir.export import ExportError, export_onnx

    with pytest.raises(ExportError, match="NAFNet is not supported") as e:
        export_onnx(build_model(PRESETS["nafnet-s"]), tmp_path / "n.onnx")
    assert "\n" not in str(e.value)
    # a subclass with its own forward is not read as the parent's computation
    with pytest.raises(ExportError, match="RateCoded overrides SpikingDnCNN.forward"):
        export_onnx(RateCoded(depth=3, width=4, T=2), tmp_path / "r.onnx")
    model = small_snn("lif-hard")
    export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_onnx(model, tmp_path / "m.onnx")
    export_onnx(model, tmp_path / "m.onnx", overwrite=True)
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "m.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary files left behind


# ------------------------------------------------------------------------------ NIR


@pytest.fixture(scope="module")
def nir():
    return pytest.importorskip("nir", reason="NIR export needs the nir package (spikeir[export])")


@pytest.fixture(scope="module")
def snn_import():
    """snnTorch's NIR import, and its node converter (used for Conv2d and LIF in the executor below)."""
    pytest.importorskip("nirtorch", reason="running NIR graphs needs nirtorch (dev extra)")
    mod = pytest.importorskip("snntorch.import_nir", reason="running NIR graphs needs snntorch (dev extra)")
    return mod


def nirtorch_executor(graph, snn_import):
    """Run a NIR graph with nirtorch's executor: snnTorch's modules for Conv2d and LIF (what its
    ``import_from_nir`` uses), and the NIR definitions of the primitives snnTorch 1.0 lacks or
    mis-imports (IF), with the discretisation recorded in the graph (per step: I ``v += r x``, LI
    ``v += dt/tau (v_leak - v + r x)``, IF ``v += r x`` then reset to ``v_reset``)."""
    import nir
    import nirtorch

    dt = float(np.asarray(graph.metadata["dt"]))

    def t(a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)

    class Integrator(nn.Module):
        def __init__(self, node) -> None:
            super().__init__()
            self.r, self.leaky = t(node.r), isinstance(node, nir.LI)
            if self.leaky:
                self.a, self.v_leak = t(dt / np.asarray(node.tau)), t(node.v_leak)

        def forward(self, x, state=None):
            v = torch.zeros_like(x) if state is None else state
            v = v + self.a * (self.v_leak - v + self.r * x) if self.leaky else v + self.r * x
            return v, v

    class Threshold(nn.Module):
        def __init__(self, node) -> None:
            super().__init__()
            self.th = t(node.threshold)

        def forward(self, x):
            return (x >= self.th).float()  # spikeir's convention; NIR writes > (ties only)

    class IFNeuron(nn.Module):  # snnTorch 1.0 imports nir.IF as a leaky neuron (beta=0.9; fixed upstream)
        def __init__(self, node) -> None:
            super().__init__()
            self.r, self.th, self.v_reset = t(node.r), t(node.v_threshold), t(node.v_reset)

        def forward(self, x, state=None):
            v = (torch.zeros_like(x) if state is None else state) + self.r * x
            s = (v >= self.th).float()
            return s, v * (1 - s) + self.v_reset * s

    class Scale(nn.Module):
        def __init__(self, node) -> None:
            super().__init__()
            self.s = t(node.scale)

        def forward(self, x):
            return x * self.s

    def snn(node):
        return snn_import._nir_to_snntorch_module(node, init_hidden=True)

    node_map = {nir.Conv2d: snn, nir.LIF: snn, nir.IF: IFNeuron, nir.I: Integrator, nir.LI: Integrator,
                nir.Threshold: Threshold, nir.Scale: Scale}
    return nirtorch.nir_to_torch(graph, node_map)


def run_steps(net, x: torch.Tensor, T: int, spike_modules: list[nn.Module]) -> tuple[list, list]:
    """Feed the image at each of T steps (direct encoding); per-step outputs and per-module spikes."""
    rec: dict[int, list] = {i: [] for i in range(len(spike_modules))}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: rec[k].append(o[0] if isinstance(o, tuple) else o))
             for k, m in enumerate(spike_modules)]
    outs, state = [], None
    try:
        with torch.no_grad():
            for _ in range(T):
                y, state = net(x, state)
                outs.append(y.clone())
    finally:
        for h in hooks:
            h.remove()
    return outs, [torch.stack(rec[k]) for k in range(len(spike_modules))]


def spikeir_steps(model, x: torch.Tensor, readout: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """spikeir's per-step read-out: with the integrator, mean over steps <= t of (x - tail(S[t]));
    without, tail(S[t]). Also every layer's 0/1 spikes."""
    last: list[torch.Tensor] = []
    neurons = [m for m in model.modules() if isinstance(m, BaseNeuron)]
    h = neurons[-1].register_forward_hook(lambda mod, i, o: last.append(o))
    try:
        _, spikes = record_spikes(model, x)
    finally:
        h.remove()
    with torch.no_grad():
        per_step = [model.tail(s) for s in last[0]]
    if not readout:
        return per_step, spikes
    T = len(per_step)
    return [sum((x - p) / T for p in per_step[: t + 1]) for t in range(T)], spikes


def assert_spikes_agree(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    total = sum(s.numel() for s in ours)
    diff = sum(int((a != 0).ne(b.reshape(a.shape) != 0).sum()) for a, b in zip(ours, theirs))
    # the NIR form of a soft reset adds the reset as the next step's input, a different order of the
    # same float additions; a flip needs a membrane within rounding of its threshold
    assert diff <= 1e-3 * total, f"{diff} of {total} spikes differ"
    assert sum(float(s.sum()) for s in ours) > 0


@pytest.mark.parametrize("key", list(SNN_CONFIGS))
def test_nir_roundtrip_through_file(nir, tmp_path, key):
    from spikeir.export import export_nir, load_nir

    model = small_snn(key)
    path = export_nir(model, tmp_path / "m.nir", 12, 10)
    back = load_nir(path)
    assert back.spikeir_info["source"] == "nir" and back.T == model.T
    x = torch.rand(2, 1, 12, 10, generator=torch.Generator().manual_seed(3)) * 1.2 - 0.1
    ref, s_ref = record_spikes(model, x)
    out, s_back = record_spikes(back, x)
    assert_spikes_agree(s_ref, s_back)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("key", ["if-soft-half", "lif-soft-decay-input", "lif-hard", "if-hard-per-channel"])
def test_nir_graph_runs_in_nirtorch_with_snntorch_modules(nir, snn_import, key):
    from spikeir.export import to_nir

    model = small_snn(key)
    H, W = 12, 10
    graph = to_nir(model, H, W)
    net = nirtorch_executor(graph, snn_import)
    # spikes: snnTorch's Leaky (hard-reset LIF), IF, or the Threshold inside each soft-reset subgraph
    spike_mods = [m for m in net.modules() if type(m).__name__ in ("Leaky", "IFNeuron", "Threshold")]
    assert len(spike_mods) == 3
    x = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(4))
    outs, spikes = run_steps(net, x[0], model.T, spike_mods)
    ref_steps, ref_spikes = spikeir_steps(model, x, readout=True)
    assert_spikes_agree([s[:, 0] for s in ref_spikes], spikes)
    for t, (a, b) in enumerate(zip(outs, ref_steps)):
        np.testing.assert_allclose(a.numpy(), b[0].numpy(), rtol=0, atol=1e-4, err_msg=f"step {t}")
    with torch.no_grad():  # the value after the last step is the restored image
        np.testing.assert_allclose(outs[-1].numpy(), model(x)[0].numpy(), rtol=0, atol=1e-4)


def test_nir_hard_lif_graph_in_snntorch_import_from_nir(nir, snn_import):
    """snnTorch's own ``import_from_nir``, unmodified, on a graph it can read: Conv2d + LIF only."""
    from spikeir.export import to_nir

    model = small_snn("lif-hard")
    graph = to_nir(model, 12, 10, readout=False)
    assert {type(n).__name__ for n in graph.nodes.values()} == {"Input", "Conv2d", "LIF", "Output"}
    net = snn_import.import_from_nir(graph)
    leaky = [m for m in net.modules() if type(m).__name__ == "Leaky"]
    assert len(leaky) == 3
    x = torch.rand(2, 1, 12, 10, generator=torch.Generator().manual_seed(5))
    outs, spikes = run_steps(net, x, model.T, leaky)
    ref_steps, ref_spikes = spikeir_steps(model, x, readout=False)
    assert_spikes_agree(ref_spikes, spikes)
    for t, (a, b) in enumerate(zip(outs, ref_steps)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5, err_msg=f"step {t}")
    # the host read-out recorded in the metadata gives the image
    image = x - torch.stack(outs).mean(0)
    with torch.no_grad():
        np.testing.assert_allclose(image.numpy(), model(x).numpy(), rtol=0, atol=1e-5)


def test_nir_bundled_model(nir, snn_import, tmp_path):
    from spikeir.export import export_nir, load_nir

    model = load_model("spiden-s25", "cpu")
    path = export_nir(model, tmp_path / "spiden.nir", 20, 24)
    import nir as nir_pkg

    graph = nir_pkg.read(str(path))
    net = nirtorch_executor(graph, snn_import)
    x = torch.rand(1, 1, 20, 24, generator=torch.Generator().manual_seed(6))
    spike_mods = [m for m in net.modules() if type(m).__name__ == "Threshold"]
    outs, spikes = run_steps(net, x[0], model.T, spike_mods)
    ref, ref_spikes = record_spikes(model, x)
    assert_spikes_agree([s[:, 0] for s in ref_spikes], spikes)
    np.testing.assert_allclose(outs[-1].numpy(), ref[0].numpy(), rtol=0, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(load_nir(path)(x).numpy(), ref.numpy(), rtol=0, atol=1e-4)


def test_nir_file_loads_without_spikeir(nir, tmp_path):
    from spikeir.export import export_nir

    path = export_nir(small_snn("if-soft-half"), tmp_path / "m.nir", 8, 8, dt=1e-3)
    res = run_without_spikeir(f"""
        import json, nir
        g = nir.read({str(path)!r})
        kinds = {{name: type(node).__name__ for name, node in g.nodes.items()}}
        print(json.dumps({{"kinds": kinds, "T": int(g.metadata["T"]), "dt": float(g.metadata["dt"]),
                          "soft": sorted(type(n).__name__ for n in g.nodes["02_head_neuron"].nodes.values())}}))
    """)
    assert res["T"] == 4 and res["dt"] == 1e-3
    assert res["kinds"] == {"input": "Input", "01_head": "Conv2d", "02_head_neuron": "NIRGraph", "03_body_0": "Conv2d",
                            "04_body_1": "NIRGraph", "05_body_2": "Conv2d", "06_body_3": "NIRGraph",
                            "07_tail": "Conv2d", "readout": "I", "output": "Output"}
    assert res["soft"] == ["I", "Input", "Output", "Scale", "Threshold"]


def test_nir_refuses_what_it_cannot_express(nir, tmp_path):
    from spikeir.export import ExportError, nir_refusal, to_nir

    cases = {
        "esdnet-small": "encoder_level1.0.attn (MDA): multi-dimensional attention",
        "dncnn-cpu": "net.1 (ReLU): an ANN activation",
        "spiking-unet-s": "SpikingUNet: the NIR exporter knows the SpikingDnCNN layout only",
    }
    for preset, expected in cases.items():
        model = build_model(PRESETS[preset])
        assert expected in nir_refusal(model)
        with pytest.raises(ExportError) as e:
            to_nir(model, 8, 8)
        assert expected in str(e.value) and "\n" not in str(e.value)
    assert nir_refusal(small_snn("lif-hard")) is None
    with pytest.raises(ExportError, match="RateCoded overrides SpikingDnCNN.forward"):
        to_nir(RateCoded(depth=3, width=4, T=2), 8, 8)


def test_missing_export_package_is_one_clear_line(monkeypatch, tmp_path):
    from spikeir.export import ExportError, export_nir, export_onnx

    monkeypatch.setitem(sys.modules, "nir", None)  # as if nir were not installed
    monkeypatch.setitem(sys.modules, "onnx", None)
    for fn, path in ((export_nir, tmp_path / "m.nir"), (export_onnx, tmp_path / "m.onnx")):
        with pytest.raises(ExportError, match=r"spikeir\[export\]") as e:
            fn(small_snn("lif-hard"), path, **({"height": 8, "width": 8} if fn is export_nir else {}))
        assert "\n" not in str(e.value)


def test_cli_export(nir, ort, tmp_path, capsys):
    out = tmp_path / "spiden.nir"
    assert main(["export", "spiden-s25", "--format", "nir", "-o", str(out), "--size", "16x20"]) == 0
    assert "16x20" in capsys.readouterr().out and out.is_file()
    assert main(["export", "spiden-s25", "--format", "nir", "-o", str(out), "--size", "16x20"]) == 2
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert main(["export", "esdnet-small", "--format", "nir", "-o", str(tmp_path / "e.nir")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeir: error: cannot export to NIR: encoder_level1.0.attn") and err.count("\n") == 1
    assert main(["export", "dncnn-s25", "--format", "onnx", "-o", str(tmp_path / "d.onnx")]) == 0
    assert (tmp_path / "d.onnx").is_file()
    assert main(["export", "spiden-s25", "--format", "nir", "-o", str(tmp_path / "x.nir"), "--size", "8"]) == 2
    assert "--size takes HEIGHTxWIDTH" in capsys.readouterr().err
    bare = tmp_path / "bare.nir"
    assert main(["export", "spiden-s25", "--format", "nir", "-o", str(bare), "--size", "8x8", "--no-readout",
                 "--dt", "0.001"]) == 0
    import nir as nir_pkg

    graph = nir_pkg.read(str(bare))
    assert "readout" not in graph.nodes and float(graph.metadata["dt"]) == 0.001
    from spikeir.export import load_nir

    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # the host read-out is rebuilt too
        np.testing.assert_allclose(load_nir(bare)(x).numpy(), load_model("spiden-s25", "cpu")(x).numpy(), atol=1e-4)


def test_cli_denoise_with_onnx_runtime_matches_torch(ort, tmp_path, capsys):
    from _helpers import write_images
    from spikeir.data import read_image

    src = tmp_path / "in"
    write_images(src, 1, h=36, w=44)
    outs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        assert main(["denoise", str(src), "-o", str(out), "--model", "spiden-s25", "--sigma", "25",
                     "--device", "cpu", "--runtime", runtime]) == 0
        outs[runtime] = read_image(out / "img00.png").astype(int)
    printed = capsys.readouterr().out
    assert "firing rate" in printed.splitlines()[0] and "firing rate" not in printed.splitlines()[1]
    # uint8 output: a rounding step, except near a spike that flips under the other runtime's float
    # rounding (a membrane within rounding of its threshold; at most 0.014 on 0..1 in export.json)
    d = np.abs(outs["onnx"] - outs["torch"])
    assert (d > 1).mean() <= 0.01 and d.max() <= 8, ((d > 1).mean(), d.max())
    assert main(["denoise", str(src), "-o", str(tmp_path / "x"), "--runtime", "onnx", "--device", "cuda"]) == 2
    assert "--runtime onnx runs on the CPU" in capsys.readouterr().err


def test_cli_derain_with_onnx_runtime_matches_torch(ort, tmp_path):
    """The bundled ANN derainer through --runtime onnx: same uint8 output as PyTorch up to rounding."""
    from _helpers import write_images
    from spikeir.data import read_image

    src = tmp_path / "in"
    write_images(src, 1, h=32, w=40, rgb=True)
    outs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        assert main(["derain", str(src), "-o", str(out), "--model", "esdnet-s-ann", "--device", "cpu",
                     "--runtime", runtime]) == 0
        outs[runtime] = read_image(out / "img00.png").astype(int)
    assert outs["onnx"].shape == (32, 40, 3)
    assert np.abs(outs["onnx"] - outs["torch"]).max() <= 1
