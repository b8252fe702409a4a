"""Load on the digit app: predictions per second and latency with concurrent clients,
with the server idle and while it trains.

    python bench/app_load.py [--model digits.safetensors] [--clients 8] [--seconds 15]

Starts ``python -m nnscratch.app`` on a free loopback port (with ``--model``, or a model
it trains first for a few seconds on MNIST from ``--data`` / ``NNSCRATCH_DATA``), then
``--clients`` threads, each with its own HTTP connection, post the same picture the Draw
page would send (a 280x280 canvas: an MNIST test digit enlarged tenfold) as fast as the
answers come, for ``--seconds``. Then it starts a training run (784-128-10, all 55,000
images, batch 128) and measures again while it goes; the run's epoch times, with and
without the load, say what the predictions cost the training.

Clients and server share the machine's cores, so the numbers are those of one machine
serving itself; what matters is the ratio between the two phases.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nnscratch as nn  # noqa: E402
from nnscratch.app.core import build_model  # noqa: E402
from nnscratch.datasets import Dataset, load_mnist  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a saved digit model (default: train "
                        "784-128-10 for two epochs on 20,000 images first)")
    parser.add_argument("--data", default=None, help="MNIST folder (default NNSCRATCH_DATA)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def quick_model(data: Dataset, folder: Path) -> Path:
    model = build_model(784, (128,))
    model.fit(data.x_train[:20000], data.y_train[:20000], loss=nn.SoftmaxCrossEntropy(),
              optimizer=nn.Adam(lr=2e-3), epochs=2, batch_size=64, seed=0)
    path = folder / "digits.safetensors"
    model.save(str(path))
    return path


def hammer(url: str, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads posting ``body`` for ``seconds``: throughput and latencies."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    start_line = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        with httpx.Client(timeout=30) as http:
            start_line.wait()
            deadline = time.perf_counter() + seconds
            while (sent := time.perf_counter()) < deadline:
                response = http.post(url, content=body,
                                     headers={"Content-Type": "application/json"})
                latencies[index].append(time.perf_counter() - sent)
                failures[index] += response.status_code != 200

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = np.concatenate([np.array(times) for times in latencies]) * 1000
    return {"requests": every.size, "per_second": every.size / elapsed,
            "p50_ms": float(np.percentile(every, 50)), "p95_ms": float(np.percentile(every, 95)),
            "p99_ms": float(np.percentile(every, 99)), "max_ms": float(every.max()),
            "failures": sum(failures)}


class Events:
    """The training run's events, read in a thread."""

    def __init__(self, url: str) -> None:
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()

    def _read(self, url: str) -> None:
        with httpx.Client(timeout=None) as http, http.stream("GET", url) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))

    def wait_for(self, kind: str, count: int = 1, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while sum(e["kind"] == kind for e in self.events) < count:
            if time.monotonic() > deadline or any(e.get("done") for e in self.events):
                raise RuntimeError(f"no {kind} event: {self.events[-1:]}")
            time.sleep(0.05)

    def epoch_seconds(self) -> list[float]:
        return [e["seconds"] for e in self.events if e["kind"] == "epoch"]


def main() -> int:
    args = parse_args()
    data_folder = args.data or os.environ.get("NNSCRATCH_DATA")
    data = load_mnist(data_folder, download=False, progress=False)
    digit = (data.x_test[0].reshape(28, 28) * 255).round().astype(np.int64)
    canvas = np.kron(digit, np.ones((10, 10), dtype=np.int64))
    body = json.dumps({"image": canvas.tolist()}).encode()

    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(quick_model(data, Path(folder)))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "nnscratch.app", "--model", model, "--port", str(port),
                   "--no-download"] + (["--data", data_folder] if data_folder else [])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NNSCRATCH_BACKEND": "numpy"}
        server = subprocess.Popen(command, cwd=folder, env=env)
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/api/status").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            print(f"body: {len(body):,} bytes (a 280x280 canvas); {args.clients} clients, "
                  f"{args.seconds:g} s per phase; {os.cpu_count()} CPUs shared by clients, "
                  "server and training")
            hammer(base + "/api/predict", body, args.clients, 2.0)  # warm up
            idle = hammer(base + "/api/predict", body, args.clients, args.seconds)

            httpx.post(base + "/api/train", json={"epochs": 50, "hidden": [128]})
            events = Events(base + "/api/train/events")
            events.wait_for("epoch", 2)  # data loaded, an epoch without load measured
            quiet_epochs = events.epoch_seconds()
            loaded_from = len(events.epoch_seconds())
            busy = hammer(base + "/api/predict", body, args.clients, args.seconds)
            loaded_epochs = events.epoch_seconds()[loaded_from:]
            httpx.post(base + "/api/train/stop", json={})
            events.wait_for("done", timeout=120)
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"{'phase':<18}{'requests':>9}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'failed':>8}")
    for name, row in (("idle", idle), ("while training", busy)):
        print(f"{name:<18}{row['requests']:>9}{row['per_second']:>8.1f}{row['p50_ms']:>9.1f}"
              f"{row['p95_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['max_ms']:>9.1f}"
              f"{row['failures']:>8}")
    print(f"training epoch (784-128-10, 55,000 images): {np.mean(quiet_epochs):.2f} s without "
          f"the load, {', '.join(f'{s:.2f}' for s in loaded_epochs) or 'none finished'} s "
          "under it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
