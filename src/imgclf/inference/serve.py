"""Serve a run over HTTP: ``POST /predict``, ``GET /health``, ``GET /classes`` and a web page at ``/``.

    imgclf serve runs/mobilenet_v2-... [--host 127.0.0.1 --port 8000]

    curl -F file=@cat.jpg http://127.0.0.1:8000/predict          # multipart field "file"
    curl --data-binary @cat.jpg http://127.0.0.1:8000/predict    # or the raw bytes as the body

Safety and bounded memory:

* uploads over ``max_upload_bytes`` (default 10 MB) get 413, checked on ``Content-Length`` and
  again while the body streams in; a body that is not a readable image gets 400 with the
  reason; an image whose header announces more than ``max_pixels`` pixels (default 40 MP) is
  refused before it is decoded (413), so decompression bombs never expand;
* it binds to 127.0.0.1 unless told otherwise; the model loads with Keras safe mode;
* decoding runs on a small fixed thread pool; the model runs on ONE worker thread that takes
  up to ``max_batch`` pending images per call (requests that arrive while the model is busy
  are batched together); at most ``max_queue`` images wait, beyond that 503 (retry);
  uvicorn's ``limit_concurrency`` caps open requests.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
# (``request: Request``) at run time, and ``Request`` is imported inside create_app.
import asyncio
import contextlib
import functools
import ipaddress
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import ExplainError, ImageTooLargeError, ServeError
from ..explain import GradCAM, overlay, png_bytes
from ..run import resolve_run
from ..version import __version__
from .inputs import decode, describe_error, open_header, predict_arrays, top_k_of
from .predict import model_runtime

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_QUEUE = 256
DEFAULT_LIMIT_CONCURRENCY = 128
DEFAULT_TOP_K = 5
INLINE_DECODE_PIXELS = 640 * 480  # images up to this size are decoded on the event loop (~1 ms)


def require_serve_packages() -> None:
    missing = []
    import importlib.util

    for mods, pkg in ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"),
                      (("python_multipart", "multipart"), "python-multipart")):
        if not any(importlib.util.find_spec(m) is not None for m in mods):
            missing.append(pkg)
    if missing:
        raise ServeError(f"serving needs {', '.join(missing)}: install imgclf[serve] (pip install 'imgclf[serve]')")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the batching worker ---------------------------------------------------------------

class Busy(Exception):
    """The queue of images waiting for the model is full."""


class Batcher:
    """One worker thread runs the model on batches of up to ``max_batch`` queued images.

    ``await batcher.submit(pixels)`` returns that image's probabilities. Requests that come in
    while the model is busy wait in an asyncio queue (at most ``max_queue``) and are taken
    together on the next call, so memory stays bounded and throughput grows with load.
    """

    def __init__(self, model, max_batch: int = DEFAULT_MAX_BATCH, max_queue: int = DEFAULT_MAX_QUEUE):
        self.model = model
        self.max_batch = int(max_batch)
        self.max_queue = int(max_queue)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgclf-model")
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}

    def warm_up(self, image_size: int) -> None:
        """Trace the model for batch sizes 1 and 2 (then any size), off the request path."""
        for n in (1, 2):
            self._executor.submit(predict_arrays, self.model, np.zeros((n, image_size, image_size, 3), np.float32)).result()

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on the model's thread (Grad-CAM uses the same model as the batches)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((pixels, fut))
        except asyncio.QueueFull:
            raise Busy() from None
        return await fut

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(x, f) for x, f in batch if not f.done()]  # a client that left is skipped
            if not live:
                continue
            try:
                probs = await loop.run_in_executor(self._executor, predict_arrays, self.model, [x for x, _ in live])
            except Exception as e:  # pragma: no cover - a model failure answers every waiting request
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.stats["requests"] += len(live)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
            for (_, f), p in zip(live, probs):
                if not f.done():
                    f.set_result(p)


# -- the upload limit -------------------------------------------------------------------

class UploadTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes (declared or streamed); nosniff on every answer."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    return await _send_json(send, 413, {"detail": _too_large(self.limit, declared)},
                                            close=True)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLarge()
            return message

        async def send_nosniff(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-content-type-options", b"nosniff")]
            await send(message)

        return await self.app(scope, limited, send_nosniff)


def _too_large(limit: int, size: int | None = None) -> str:
    got = f" ({size / 1e6:.1f} MB)" if size else ""
    return f"upload too large{got}: the limit is {limit / 1e6:g} MB"


async def _send_json(send, status: int, body: dict, close: bool = False) -> None:
    import json

    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# -- the app -----------------------------------------------------------------------

@dataclass
class ServeOptions:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue: int = DEFAULT_MAX_QUEUE
    top_k: int = DEFAULT_TOP_K
    decode_workers: int | None = None
    runtime: str = "auto"  # where the model runs (imgclf.models.runtime): auto, keras, onnxruntime


def index_html() -> str:
    return resources.files("imgclf.inference").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(run, **options):
    """The FastAPI app for ``run`` (a :class:`imgclf.Run` or its folder). See :class:`ServeOptions`."""
    require_serve_packages()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import UploadFile

    opts = ServeOptions(**options)
    for name in ("max_upload_bytes", "max_pixels", "max_batch", "max_queue", "top_k"):
        if int(getattr(opts, name)) < 1:
            raise ServeError(f"{name} must be >= 1, got {getattr(opts, name)!r}")
    run = resolve_run(run)
    model = run.model  # safe mode, loaded once (Grad-CAM runs on it whatever the runtime)
    runner, runtime_info = model_runtime(run, opts.runtime)  # a server runs long: auto converts
    class_names = run.class_names
    preprocessing = run.preprocessing
    info = {
        "run": run.path.name,
        "model": run.meta["train"].get("model"),
        "class_names": class_names,
        "image_size": run.image_size,
        "imgclf_version": __version__,
        "runtime": runtime_info["runtime"],
    }
    batcher = Batcher(runner, opts.max_batch, opts.max_queue)
    batcher.warm_up(run.image_size)
    decoder = ThreadPoolExecutor(max_workers=opts.decode_workers or max(2, min(4, os.cpu_count() or 1)),
                                 thread_name_prefix="imgclf-decode")
    page = index_html()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"imgclf: {run.path.name}", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # the Swagger page would load from a CDN
    app.state.run = run
    app.state.batcher = batcher
    app.state.runtime = runtime_info
    app.add_middleware(BodyLimit, limit=opts.max_upload_bytes)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(UploadTooLarge)
    async def _upload_too_large(request, exc):
        return JSONResponse({"detail": _too_large(opts.max_upload_bytes)}, status_code=413,
                            headers={"connection": "close"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home():
        return HTMLResponse(page, headers={
            "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; "
                                       "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            "cache-control": "no-cache",
        })

    @app.get("/health")
    async def health():
        return {"status": "ok", **{k: v for k, v in info.items() if k != "class_names"},
                "classes": len(class_names), "pending": batcher.pending, **batcher.stats}

    @app.get("/classes")
    async def classes():
        return {"class_names": class_names}

    explainer = {}

    def heatmap_png(pixels: np.ndarray, class_index: int) -> str:
        import base64

        if "cam" not in explainer:
            explainer["cam"] = GradCAM(model)
        heat, _ = explainer["cam"](pixels[None], [class_index])
        return base64.b64encode(png_bytes(overlay(pixels, heat[0]))).decode("ascii")

    @app.post("/predict")
    async def predict_endpoint(request: Request, top_k: int | None = None, explain: bool = False):
        t0 = time.perf_counter()
        k = opts.top_k if top_k is None else top_k
        if k < 1:
            return error(400, f"top_k must be >= 1, got {k}")
        k = min(k, len(class_names))
        ctype = request.headers.get("content-type", "")
        filename = None
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=20)
            except UploadTooLarge:
                raise
            except Exception as e:
                return error(400, f"cannot parse the multipart upload: {str(e)[:200]}")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                await form.close()
                return error(400, "send the image in a multipart field named 'file' (or as the raw request body)")
            filename = upload.filename
            data = await upload.read()
            await form.close()
        else:
            data = await request.body()
        if not data:
            return error(400, "empty upload: send an image as the multipart field 'file' or as the request body")
        try:
            # Reading the header is cheap; small images (most uploads) decode right here, large
            # ones on the decode pool so that the event loop never waits on them.
            img = open_header(data, opts.max_pixels)
            w, h = img.size
            if w * h <= INLINE_DECODE_PIXELS:
                pixels = decode(img, preprocessing, opened=True)
            else:
                pixels = await asyncio.get_running_loop().run_in_executor(
                    decoder, functools.partial(decode, img, preprocessing, opened=True))
        except ImageTooLargeError as e:
            return error(413, str(e))
        except Exception as e:
            return error(400, describe_error(e))
        try:
            probs = await batcher.submit(pixels)
        except Busy:
            return JSONResponse({"detail": "server busy: too many images waiting; retry shortly"},
                                status_code=503, headers={"retry-after": "1"})
        tk = top_k_of(probs, class_names, k)
        answer = {  # plain JSON types already: no FastAPI encoder pass
            "label": tk[0][0],
            "probability": tk[0][1],
            "top_k": [{"class": c, "probability": p} for c, p in tk],
            "filename": filename,
            "model": info["model"],
        }
        if explain:
            try:
                png = await batcher.call(heatmap_png, pixels, class_names.index(tk[0][0]))
            except ExplainError as e:  # the prediction stands; the heatmap cannot be made
                answer["seconds"] = round(time.perf_counter() - t0, 4)
                return JSONResponse({"detail": str(e), **answer}, status_code=422)
            s = run.image_size
            answer["explanation"] = {"class": tk[0][0], "method": "grad-cam", "format": "png", "width": s,
                                     "height": s, "png_base64": png}
        answer["seconds"] = round(time.perf_counter() - t0, 4)
        return JSONResponse(answer)

    return app


# -- running it ----------------------------------------------------------------------

def _uvicorn_config(app, host: str, port: int, log_level: str, limit_concurrency: int | None):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug",
                          limit_concurrency=limit_concurrency, timeout_keep_alive=30, server_header=False)


def serve(
    run,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    log_level: str = "info",
    limit_concurrency: int | None = DEFAULT_LIMIT_CONCURRENCY,
    **options,
) -> None:
    """Serve ``run`` until interrupted (see :func:`create_app` for ``options``)."""
    require_serve_packages()
    import uvicorn

    _check_port(host, port)  # before loading the model: a busy port fails fast
    app = create_app(run, **options)
    name = app.state.run.path
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {name} on http://{shown}:{port}/ with {app.state.runtime['runtime']}  (Ctrl-C to stop)",
          flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; there is no authentication",
              flush=True)
    server = uvicorn.Server(_uvicorn_config(app, host, port, log_level, limit_concurrency))
    server.run()


def _check_port(host: str, port: int) -> None:
    import socket

    if not 0 <= int(port) <= 65535:
        raise ServeError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port} ({e.strerror}); is another server running? "
                             "choose another --port") from None


@contextlib.contextmanager
def background_server(run, host: str = DEFAULT_HOST, port: int = 0, *, log_level: str = "warning",
                      limit_concurrency: int | None = DEFAULT_LIMIT_CONCURRENCY, **options):
    """Run the server in a thread (tests, notebooks); yields its base URL, e.g. ``http://127.0.0.1:54321``."""
    require_serve_packages()
    import uvicorn

    app = create_app(run, **options)
    server = uvicorn.Server(_uvicorn_config(app, host, port, log_level, limit_concurrency))
    thread = threading.Thread(target=server.run, name="imgclf-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ServeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    sock = server.servers[0].sockets[0]
    actual = sock.getsockname()[1]
    try:
        yield f"http://{host}:{actual}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


__all__ = ["Batcher", "BodyLimit", "ServeError", "ServeOptions", "background_server", "create_app",
           "index_html", "is_loopback", "serve"]
