"""Load test for ``imgclf serve``: N requests at concurrency C against a server on loopback.

    .venv/bin/python bench/serve_load.py                      # 1,000 requests at concurrency 16
    .venv/bin/python bench/serve_load.py --run runs/x --requests 300 --concurrency 8

Without ``--run`` it makes (once, cached in ``--workdir``) a MobileNetV2 0.35 run at 160x160,
trained one epoch on a small synthetic dataset, with the ImageNet weights from
../shared/weights when present (``weights=None`` otherwise: the speed is the same).

What it measures, for each runtime of ``--runtimes`` (default ``keras,onnxruntime``), in order:

1. the model's raw batched throughput on that runtime: batches of ``--max-batch`` images
   already decoded, in this process, with no server running (Keras: ``model.predict_on_batch``,
   today's path; ONNX Runtime: the session ``imgclf serve --runtime onnxruntime`` makes);
2. the served throughput: ``imgclf serve --runtime R`` started as a subprocess on a free
   loopback port, then ``--requests`` POST /predict (multipart field ``file``, one JPEG from the
   test split) from ``--concurrency`` keep-alive connections (a minimal asyncio HTTP/1.1
   client, so that the client takes as little of the shared CPU as possible), after a warm-up.

It prints throughput, p50/p95/p99 latency, errors, the server's batching figures, the raw
figure and the ratio served/raw per runtime, then served ONNX Runtime / served Keras.
Targets (2 cores, MobileNetV2 0.35 at 160x160): no errors in 1,000 requests at concurrency 16,
served/raw at least 0.5, and ONNX Runtime served at least 2x Keras served. Exit status 1 if missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_run(workdir: Path, image_size: int):
    """A MobileNetV2 0.35 run at ``image_size``, trained 1 epoch on synthetic shapes (cached)."""
    import imgclf
    from imgclf.data.synthetic import make_synthetic_dataset

    run_dir = workdir / f"mobilenet_v2-{image_size}"
    if (run_dir / "model.keras").is_file() and (run_dir / "config.json").is_file():
        run = imgclf.load(run_dir)
        if run.complete:
            return run
    data = make_synthetic_dataset(workdir / f"shapes-{image_size}", per_class=24, image_size=image_size)
    ds = imgclf.load_dataset(data, image_size=image_size, validation=0.2, test=0.2, progress=False)
    weights = str(WEIGHTS) if WEIGHTS.is_file() else None
    print(f"training a MobileNetV2 0.35 run at {image_size}x{image_size} (weights: {weights or 'none'}) ...",
          flush=True)
    return imgclf.train(ds, "mobilenet_v2", output=run_dir, epochs=1, image_size=image_size, alpha=0.35,
                        weights=weights, progress=False)


def raw_throughput(run, batch: int, runtime: str = "keras", rounds: int = 3,
                   seconds: float = 3.0) -> tuple[float, list[float]]:
    """Images per second of the model on ``runtime`` on ``batch`` decoded images: the best of
    ``rounds`` timed rounds (after a warm-up), so that a busy neighbour lowers it as little as
    possible; the ratio against it is then the conservative one."""
    import numpy as np

    from imgclf.inference.predict import model_runtime, predict_arrays

    runner, info = model_runtime(run, runtime)
    if info["runtime"] != runtime:
        raise SystemExit(f"{runtime} is not available: {info.get('reason')}")
    images = run.dataset(progress=False).images("test")
    reps = int(np.ceil(batch / len(images)))
    x = np.concatenate([images] * reps)[:batch].astype(np.float32)
    for _ in range(3):
        predict_arrays(runner, x)
    figures = []
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            predict_arrays(runner, x)
            n += batch
        figures.append(n / (time.perf_counter() - t0))
    return max(figures), figures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_path: Path, port: int, max_batch: int, runtime: str = "auto") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "imgclf.cli", "serve", str(run_path), "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(max_batch), "--log-level", "warning", "--runtime", runtime]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stdout.read()[-2000:]}")
        try:
            status, _ = asyncio.run(request("127.0.0.1", port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start within 180 s")


async def read_response(reader) -> tuple[int, bytes, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


async def request(host: str, port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        status, body, _ = await read_response(reader)
        return status, body
    finally:
        writer.close()


def multipart_request(image: bytes, name: str, port: int) -> bytes:
    boundary = "imgclfbench7d1c0e"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict?top_k=3 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def load(port: int, raw: bytes, total: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    remaining = [total]

    async def connection():
        reader = writer = None
        while remaining[0] > 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                await writer.drain()
                status, body, close = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"HTTP {status}: {body[:120]!r}")
                if close:
                    writer.close()
                    reader = writer = None
            except Exception as e:  # noqa: BLE001 - every failure is counted
                latencies.append(time.perf_counter() - t0)
                errors.append(f"{type(e).__name__}: {e}")
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"wall": wall, "latencies": latencies, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="an existing run folder (default: make the MobileNetV2 run)")
    ap.add_argument("--requests", "-n", type=int, default=1000)
    ap.add_argument("--concurrency", "-c", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch and the raw batch size")
    ap.add_argument("--runtimes", default="keras,onnxruntime",
                    help="comma-separated runtimes to measure, one server each (default keras,onnxruntime)")
    ap.add_argument("--image", help="the image to send (default: a JPEG of the run's test split)")
    ap.add_argument("--workdir", default=os.environ.get("IMGCLF_BENCH_DIR", "/tmp/imgclf-bench/serve_load"))
    args = ap.parse_args(argv)

    import imgclf

    run = imgclf.load(args.run) if args.run else make_run(Path(args.workdir), args.image_size)
    paths = run.dataset(progress=False).paths("test")
    image_path = Path(args.image) if args.image else next((p for p in paths if p.suffix.lower() in (".jpg", ".jpeg")),
                                                          paths[0])
    image = image_path.read_bytes()
    print(f"run      {run.path} ({run.meta['train']['model']}, {run.image_size}x{run.image_size}, "
          f"{len(run.class_names)} classes)")
    print(f"request  POST /predict multipart, {image_path.name} ({len(image):,} bytes)")
    print(f"cpus     {os.cpu_count()}")

    served_by = {}
    ok = True
    for runtime in args.runtimes.split(","):
        ok &= measure_runtime(run, runtime, image, image_path, args, served_by)
    if "keras" in served_by and "onnxruntime" in served_by:
        gain = served_by["onnxruntime"] / served_by["keras"]
        ok &= gain >= 2
        print(f"\nonnxruntime served / keras served = {gain:.2f}x  (target >= 2x: {'PASS' if gain >= 2 else 'FAIL'})")
    return 0 if ok else 1


def measure_runtime(run, runtime: str, image: bytes, image_path: Path, args, served_by: dict) -> bool:
    """Raw, then served, throughput of ``run`` on ``runtime``; True if its targets are met."""
    print(f"\n-- runtime {runtime}")
    raw, rounds = raw_throughput(run, args.max_batch, runtime)
    print(f"raw      {runtime}, batch {args.max_batch}: {raw:.1f} images/s "
          f"(best of {len(rounds)} rounds: {', '.join(f'{r:.0f}' for r in rounds)})", flush=True)

    port = free_port()
    server = start_server(run.path, port, args.max_batch, runtime)
    try:
        req = multipart_request(image, image_path.name, port)
        warm = asyncio.run(load(port, req, 4 * args.concurrency, args.concurrency))
        if warm["errors"]:
            print(f"warm-up errors: {warm['errors'][:3]}")
        res = asyncio.run(load(port, req, args.requests, args.concurrency))
        health = json.loads(asyncio.run(request("127.0.0.1", port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))[1])
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    lat_ms = [x * 1000 for x in res["latencies"]]
    served = args.requests / res["wall"]
    served_by[runtime] = served
    ratio = served / raw
    errors = res["errors"]
    print(f"served   {args.requests} requests at concurrency {args.concurrency} in {res['wall']:.1f} s: "
          f"{served:.1f} requests/s (server runtime: {health.get('runtime')})")
    print(f"latency  p50 {percentile(lat_ms, 50):.1f} ms, p95 {percentile(lat_ms, 95):.1f} ms, "
          f"p99 {percentile(lat_ms, 99):.1f} ms, mean {statistics.fmean(lat_ms):.1f} ms, max {max(lat_ms):.1f} ms")
    print(f"errors   {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    if health.get("batches"):
        print(f"batching {health['requests']} images in {health['batches']} model calls "
              f"(mean {health['requests'] / health['batches']:.1f}, largest {health['largest_batch']}), "
              "warm-up included")
    ok = not errors and ratio >= 0.5 and health.get("runtime") == runtime
    print(f"ratio    served / raw = {ratio:.2f}  (target >= 0.50, no errors: {'PASS' if ok else 'FAIL'})")
    print(json.dumps({"benchmark": "serve_load", "runtime": runtime, "raw_images_per_s": round(raw, 1),
                      "served_requests_per_s": round(served, 1), "ratio": round(ratio, 2), "errors": len(errors),
                      "p50_ms": round(percentile(lat_ms, 50), 1), "p99_ms": round(percentile(lat_ms, 99), 1)}),
          flush=True)
    return ok

if __name__ == "__main__":
    sys.exit(main())
