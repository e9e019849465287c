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


def test_a_file_whose_shapes_do_not_match_its_config_lists_the_mismatches(tmp_path):
    import json as _json

    import pytest as _pytest
    from safetensors.torch import load_file, save_file

    from _helpers import TINY_SNN
    from spikeir.io import load_model, save_model
    from spikeir.models import build_model

    good = tmp_path / "good.safetensors"
    save_model(good, build_model(TINY_SNN), TINY_SNN, task="denoise", sigma=25)
    tensors = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    info = _json.loads(meta["spikeir"])
    info["model"] = {**TINY_SNN, "width": 6}  # the config now disagrees with every hidden tensor
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"spikeir": _json.dumps(info)})
    with _pytest.raises(ValueError) as e:
        load_model(bad, "cpu")
    msg = str(e.value)
    assert "shape mismatch" in msg and "head.weight: file (8, 1, 3, 3) vs model (6, 1, 3, 3)" in msg
    assert "more" in msg and "\n" not in msg


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from spikeir.io import atomic_output

    p = tmp_path / "sub" / "out.bin"
    with atomic_output(p) as tmp:
        tmp.write_bytes(b"old")
    assert p.read_bytes() == b"old"
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_output(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert p.read_bytes() == b"old" and sorted(x.name for x in p.parent.iterdir()) == ["out.bin"]
    with pytest.raises(FileExistsError, match="use --overwrite"):
        with atomic_output(p, overwrite=False):
            raise AssertionError("not reached")
    with pytest.raises(IsADirectoryError):
        with atomic_output(tmp_path / "sub"):
            raise AssertionError("not reached")
    with atomic_output(p, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert p.read_bytes() == b"new"
