"""The web page: restoration logic, HTTP endpoints, and a real browser driving the page."""

import base64
import io
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikeir.data import builtin_images
from spikeir.serve import App, make_server

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def crop():
    return dict(builtin_images("heldout", gray=True))["camera"][100:196, 150:246]


@pytest.fixture(scope="module")
def app():
    return App({"spiden-s25": "spiden-s25", "dncnn-s25": "dncnn-s25"}, device="cpu", tile=64, tile_above=128)


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_restore_returns_output_spike_map_and_energy(app, crop):
    res = app.restore(_png(crop), "denoise", "spiden-s25", sigma=25)
    out, inp = _decode(res["output_png"]), _decode(res["input_png"])
    assert out.shape == inp.shape == crop.shape and not res["tiled"]
    assert res["mean_abs_change"] > 1 and not np.array_equal(out, inp)
    # the denoised output is closer to the clean image than the noisy input is
    assert np.abs(out.astype(float) - crop).mean() < np.abs(inp.astype(float) - crop).mean()
    assert 0 < res["firing_rate"] < 1 and res["ratemap_png"]
    e = res["energy"]
    assert e["ops_45nm_j"]["snn"] > 0 and e["ops_45nm_j"]["ratio"] == pytest.approx(
        e["ops_45nm_j"]["snn"] / e["ops_45nm_j"]["ann"])
    ann = app.restore(_png(crop), "denoise", "dncnn-s25", sigma=25)
    assert ann["firing_rate"] is None and ann["energy"] is None and ann["ratemap_png"] is None


def test_large_uploads_are_tiled(app):
    big = dict(builtin_images("heldout", gray=True))["camera"][:200, :180]
    res = app.restore(_png(big), "denoise", "dncnn-s25", sigma=25)
    assert res["tiled"] and _decode(res["output_png"]).shape == big.shape


@pytest.mark.parametrize("data,task,model,msg", [
    (b"", "denoise", "spiden-s25", "empty"),
    (b"not an image at all", "denoise", "spiden-s25", "not a recognised image format"),
    (None, "derain", "spiden-s25", "is a denoise model"),
    (None, "sharpen", "spiden-s25", "unknown task"),
    (None, "denoise", "nope", "unknown model"),
])
def test_bad_requests_are_messages(app, crop, data, task, model, msg):
    with pytest.raises(ValueError, match=msg):
        app.restore(_png(crop) if data is None else data, task, model, sigma=None)


@pytest.fixture(scope="module")
def server(app):
    srv = make_server(app, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_endpoints(server, crop):
    with urllib.request.urlopen(server + "/api/models") as r:
        names = {m["name"]: m for m in json.loads(r.read())}
    assert names["spiden-s25"]["spiking"] and not names["dncnn-s25"]["spiking"]
    with urllib.request.urlopen(server + "/") as r:
        assert b"<title>spikeir" in r.read()
    req = urllib.request.Request(server + "/api/restore?task=denoise&model=dncnn-s25&sigma=25", data=_png(crop),
                                 method="POST")
    with urllib.request.urlopen(req) as r:
        assert _decode(json.loads(r.read())["output_png"]).shape == crop.shape
    bad = urllib.request.Request(server + "/api/restore?task=denoise&model=dncnn-s25", data=b"junk", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad)
    assert e.value.code == 400 and "not a recognised image format" in json.loads(e.value.read())["error"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_browser_uploads_an_image_and_sees_the_result(server, crop, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("no chromium browser on this machine (Debian: apt-get install chromium)")
    upload = tmp_path / "camera_crop.png"
    upload.write_bytes(_png(crop))
    junk = tmp_path / "notes.png"
    junk.write_text("this is not an image")
    ARTIFACTS.mkdir(exist_ok=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.wait_for_function("document.querySelectorAll('#model option').length >= 2")
            page.select_option("#model", "spiden-s25")
            page.set_input_files("#file", str(upload))
            page.click("#run")
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            src_in = page.get_attribute("#in", "src")
            src_out = page.get_attribute("#out", "src")
            assert src_out and src_out.startswith("data:image/png;base64,") and src_out != src_in
            assert page.is_visible("#rate") and "firing rate" in page.inner_text("#numbers")
            out = _decode(src_out.split(",", 1)[1])
            assert out.shape == crop.shape
            page.screenshot(path=str(ARTIFACTS / "serve_denoise.png"), full_page=True)
            # a bad upload shows a message on the page; the page keeps working
            page.set_input_files("#file", str(junk))
            page.click("#run")
            page.wait_for_selector("body[data-state=error]", timeout=60_000)
            assert "not a recognised image format" in page.inner_text("#error")
            page.screenshot(path=str(ARTIFACTS / "serve_bad_upload.png"), full_page=True)
        finally:
            browser.close()
    assert os.path.getsize(ARTIFACTS / "serve_denoise.png") > 1000


@pytest.mark.parametrize("argv,msg", [(["--model", "nameonly"], "NAME=PATH"),
                                      (["--model", "m=/no/such.safetensors"], "no model file")])
def test_serve_cli_refuses_bad_models_in_one_line(argv, msg, capsys):
    from spikeir.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
