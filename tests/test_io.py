import pytest
import torch

from _helpers import TINY_ANN, TINY_SNN
from spikeir.io import load_model, read_model_file, save_model
from spikeir.models import build_model


@pytest.mark.parametrize("cfg", [TINY_SNN, TINY_ANN])
def test_save_load_reproduces_outputs(tmp_path, cfg):
    torch.manual_seed(0)
    m = build_model(cfg)
    # train-mode pass so BN running statistics differ from their initial values
    m(torch.rand(4, 1, 12, 12))
    m.eval()
    x = torch.rand(1, 1, 15, 13)
    path = tmp_path / "m.safetensors"
    save_model(path, m, cfg, task="denoise", sigma=25)
    loaded = load_model(path, "cpu")
    assert torch.equal(loaded(x), m(x))
    _, info = read_model_file(path)
    assert info["model"] == cfg and info["sigma"] == 25
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left over


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model(bad, "cpu")
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model", "cpu")
    with pytest.raises(ValueError, match="preset without trained weights"):
        load_model("spiden-cpu", "cpu")
    m = load_model("spiden-cpu", "cpu", allow_untrained=True)
    assert m.spikeir_info["untrained"]
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors", "cpu")
    bad_cuda = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match="CUDA"):
        load_model("spiden-cpu", bad_cuda, allow_untrained=True)
