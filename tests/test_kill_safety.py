"""A process killed while it downloads or writes never leaves a partial file under the
final name (the checkpoint writer has its own kill test in test_io.py)."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nnscratch.datasets.idx import encode_idx

PAYLOAD_ROWS = 2000  # an IDX file of 2000 x 28 x 28 bytes, about 1.5 MB


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file in small chunks with pauses, and records how much it sent."""

    payload = b""
    sent = 0

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        for start in range(0, len(self.payload), 16384):
            try:
                self.wfile.write(self.payload[start:start + 16384])
                self.wfile.flush()
            except OSError:
                return
            type(self).sent = start + 16384
            time.sleep(0.02)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_server():
    payload = encode_idx(np.zeros((PAYLOAD_ROWS, 28, 28), dtype=np.uint8))
    SlowHandler.payload, SlowHandler.sent = payload, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file", payload
    server.shutdown()
    server.server_close()


def _child(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _downloading_child(url: str, payload: bytes, dest: Path) -> subprocess.Popen:
    """A process that downloads ``url`` to ``dest`` with the library's downloader."""
    return _child(f"""
        from nnscratch.datasets.mnist import download_file
        download_file([{url!r}], {str(dest)!r}, {hashlib.md5(payload).hexdigest()!r},
                      {len(payload)}, progress=False)
        print("finished")
    """)


def test_download_killed_midway_leaves_no_file(slow_server, tmp_path: Path) -> None:
    url, payload = slow_server
    dest = tmp_path / "train-images-idx3-ubyte"
    child = _downloading_child(url, payload, dest)
    deadline = time.monotonic() + 30
    while SlowHandler.sent < len(payload) // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert SlowHandler.sent >= len(payload) // 2, "the child never started downloading"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL  # killed, not finished
    assert not dest.exists()
    assert not list(tmp_path.glob("*.part"))


def test_download_that_finishes_is_complete(slow_server, tmp_path: Path) -> None:
    """The same child, left alone, writes the whole file: the kill test above is not
    passing merely because nothing is ever written."""
    url, payload = slow_server
    dest = tmp_path / "train-images-idx3-ubyte"
    child = _downloading_child(url, payload, dest)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    assert dest.read_bytes() == payload


def test_atomic_write_killed_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A writer killed between two chunks: the final name still holds the old file."""
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"old complete file")
    child = _child(f"""
        import time
        from nnscratch._files import atomic_write
        with atomic_write({str(dest)!r}) as handle:
            handle.write(b"x" * 1_000_000)
            handle.flush()
            print("half written", flush=True)
            time.sleep(60)
            handle.write(b"y" * 1_000_000)
    """)
    assert child.stdout.readline().strip() == b"half written"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert dest.read_bytes() == b"old complete file"
    leftovers = list(tmp_path.glob(".weights.bin.*.part"))
    assert len(leftovers) <= 1  # a killed process cannot clean up; the name says so
