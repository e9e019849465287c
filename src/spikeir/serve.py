"""``spikeir serve``: a small local web page to restore an uploaded image and see the spikes.

Standard library only (``http.server``): ``GET /`` is the page, ``GET /api/models`` lists the
models, ``POST /api/restore?task=denoise&model=NAME&sigma=S`` takes the raw image bytes as the
request body and answers JSON with the restored image, the spike-rate map (spiking models) and
the energy estimate, as base64 PNGs and numbers. Bad uploads get ``{"error": "..."}`` with status
400 and the page shows the message. Images larger than ``tile_above`` pixels on a side are
processed in overlapping tiles, so memory stays bounded.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from PIL import Image

from .data import ImageReadError, add_test_noise, read_image, to_uint8
from .evaluate import model_in_channels, restore
from .io import bundled_models, load_model
from .models import is_spiking

__all__ = ["App", "make_server", "serve"]

MAX_UPLOAD_BYTES = 32 * 2**20
ENERGY_CROP = 128


def _png_b64(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class App:
    """The models and the restoration logic behind the page (usable without HTTP, for tests)."""

    def __init__(self, models: dict[str, str] | None = None, device: str | None = None, tile: int = 256,
                 tile_above: int = 1024) -> None:
        self.device = device
        self.sources = dict(models) if models else {n: str(p) for n, p in bundled_models().items()}
        self._cache: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()
        self.tile, self.tile_above = tile, tile_above

    def model(self, name: str) -> torch.nn.Module:
        if name not in self.sources:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(self.sources) or 'none installed'}")
        if name not in self._cache:
            self._cache[name] = load_model(self.sources[name], self.device)
        return self._cache[name]

    def catalogue(self) -> list[dict]:
        out = []
        for name in self.sources:
            info = self.model(name).spikeir_info
            out.append({"name": name, "task": info.get("task", "denoise"), "spiking": is_spiking(self.model(name)),
                        "sigma": info.get("sigma")})
        return out

    def restore(self, data: bytes, task: str, name: str, sigma: float | None = None) -> dict:
        """Restore an uploaded image; raises ``ValueError`` with a message for the page."""
        if task not in ("denoise", "derain"):
            raise ValueError(f"unknown task {task!r}; choose denoise or derain")
        if not data:
            raise ValueError("the upload is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValueError(f"the upload is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
        model = self.model(name)
        mtask = model.spikeir_info.get("task", "denoise")
        if mtask != task:
            raise ValueError(f"model {name!r} is a {mtask} model, not a {task} model")
        gray = model_in_channels(model) == 1
        try:
            img = read_image(io.BytesIO(data), gray=gray)
        except ImageReadError as e:
            raise ValueError(str(e)) from None
        x = img.astype(np.float64) / 255.0
        if sigma:
            if not 0 < sigma <= 100:
                raise ValueError(f"sigma must be in (0, 100], got {sigma:g}")
            x = add_test_noise(img, sigma, seed=0)
        shown_in = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
        tiled = max(img.shape[:2]) > self.tile_above
        spiking = is_spiking(model)
        from .visualize import rate_map_image, record_spike_maps

        with self._lock, torch.no_grad():  # one restoration at a time: bounded memory
            if spiking and not tiled:
                with record_spike_maps(model) as maps:
                    out, rate = restore(model, x, tile=None)
                rate_img, peak = rate_map_image(maps)
            else:
                out, rate = restore(model, x, tile=self.tile if tiled else None)
                rate_img, peak = None, None
            energy = self._energy(model, x) if spiking else None
        out_u8 = to_uint8(out)
        res = {"task": task, "model": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
               "tiled": tiled, "input_png": _png_b64(shown_in), "output_png": _png_b64(out_u8),
               "firing_rate": rate, "ratemap_png": _png_b64(rate_img) if rate_img is not None else None,
               "ratemap_peak": peak, "energy": energy, "sigma": sigma,
               "mean_abs_change": float(np.abs(out_u8.astype(np.float64) - shown_in.astype(np.float64)).mean())}
        return res

    def _energy(self, model: torch.nn.Module, x: np.ndarray) -> dict:
        from .energy import measure

        H, W = x.shape[:2]
        y0, x0 = max(0, (H - ENERGY_CROP) // 2), max(0, (W - ENERGY_CROP) // 2)
        crop = x[y0:y0 + ENERGY_CROP, x0:x0 + ENERGY_CROP]
        t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        e = measure(model, [t]).energy()
        scale = (H * W) / float(crop.shape[0] * crop.shape[1])
        ops, mem = e["ops_45nm"], e["memory_aware"]

        def sc(v: float | None) -> float | None:
            return None if v is None else v * scale

        return {"crop": [int(crop.shape[0]), int(crop.shape[1])], "scale": scale,
                "ops_45nm_j": {"snn": sc(ops["snn_j"]), "ann": sc(ops["ann_j"]), "ratio": ops["snn_over_ann"]},
                "memory_aware_j": {"snn": sc(mem["snn_j"]), "ann": sc(mem["ann_j"]), "ratio": mem["snn_over_ann"]}}


_PAGE = (Path(__file__).parent / "serve_page.html")


class _Handler(BaseHTTPRequestHandler):
    app: App
    server_version = "spikeir"

    def log_message(self, fmt: str, *args) -> None:  # quiet by default
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict | list) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802
        path = urlparse(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _PAGE.read_bytes(), "text/html; charset=utf-8")
        elif path == "/api/models":
            try:
                self._json(HTTPStatus.OK, self.app.catalogue())
            except (ValueError, OSError) as e:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page at {path}"})

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path != "/api/restore":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint at {url.path}"})
            return
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_UPLOAD_BYTES:
                raise ValueError(f"the upload is {length / 2**20:.1f} MiB; "
                                 f"the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
            data = self.rfile.read(length) if length > 0 else b""
            sigma = float(q["sigma"]) if q.get("sigma") not in (None, "", "0") else None
            res = self.app.restore(data, q.get("task", "denoise"), q.get("model", ""), sigma)
        except ValueError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        except torch.cuda.OutOfMemoryError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "out of GPU memory; try a smaller image"})
            return
        except MemoryError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "out of memory; try a smaller image"})
            return
        self._json(HTTPStatus.OK, res)


def make_server(app: App, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False) -> ThreadingHTTPServer:
    """An HTTP server bound to ``host:port`` (port 0 picks a free one) serving ``app``."""
    handler = type("Handler", (_Handler,), {"app": app})
    srv = ThreadingHTTPServer((host, port), handler)
    srv.verbose = verbose  # type: ignore[attr-defined]
    return srv


def serve(host: str = "127.0.0.1", port: int = 8000, models: dict[str, str] | None = None,
          device: str | None = None) -> None:
    srv = make_server(App(models, device), host, port, verbose=True)
    print(f"spikeir serve: http://{srv.server_address[0]}:{srv.server_address[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
