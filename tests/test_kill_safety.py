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


def _kill_mid_write(dest: Path) -> Path:
    """Start a writer of ``dest``, kill it (SIGKILL) mid-write; the partial it left."""
    child = _child(f"""
        import time
        from nnscratch._files import atomic_write
        with atomic_write({str(dest)!r}) as handle:
            handle.write(b"x" * 1_000_000)
            handle.flush()
            print("half written", flush=True)
            time.sleep(60)
    """)
    assert child.stdout.readline().strip() == b"half written"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    leftovers = list(dest.parent.glob(f".{dest.name}.*.part"))
    assert len(leftovers) == 1, leftovers
    return leftovers[0]


def test_the_next_write_removes_the_partial_a_killed_writer_left(tmp_path: Path) -> None:
    """The rule of nnscratch._files: a partial nobody holds locked and nobody modified
    for STALE_PARTIAL_SECONDS is removed by the next write of the same target."""
    from nnscratch._files import STALE_PARTIAL_SECONDS, atomic_write

    dest = tmp_path / "weights.bin"
    leftover = _kill_mid_write(dest)
    with atomic_write(dest) as handle:
        handle.write(b"second")
    assert leftover.exists()  # too recent: its writer might have been alive
    aged = time.time() - STALE_PARTIAL_SECONDS - 1
    os.utime(leftover, (aged, aged))
    with atomic_write(dest) as handle:
        handle.write(b"third")
    assert not leftover.exists()
    assert dest.read_bytes() == b"third"
    assert not list(tmp_path.glob("*.part"))


def test_a_live_writers_partial_is_never_removed(tmp_path: Path) -> None:
    """A writer holds a lock on its partial: another write of the same target leaves it
    alone however old it looks, and the first writer still completes."""
    pytest.importorskip("fcntl", reason="partials are locked with fcntl.flock (POSIX)")
    from nnscratch._files import atomic_write

    dest = tmp_path / "weights.bin"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from nnscratch._files import atomic_write
            with atomic_write({str(dest)!r}) as handle:
                handle.write(b"the child's file")
                print("writing", flush=True)
                sys.stdin.readline()
            print("done", flush=True)
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing", child.stderr.read()
        (partial,) = tmp_path.glob(".weights.bin.*.part")
        os.utime(partial, (time.time() - 3600, time.time() - 3600))
        with atomic_write(dest) as handle:
            handle.write(b"the parent's file")
        assert partial.exists()
        out, err = child.communicate("go on\n", timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == 0 and out.strip() == "done", err
    assert dest.read_bytes() == b"the child's file"  # its rename came last
    assert not list(tmp_path.glob("*.part"))


SAVE_LOOP = """
import sys
import nnscratch as nn
import nnscratch._files
nnscratch._files.STALE_PARTIAL_SECONDS = 0.0  # any partial not locked counts as stale
nn.seed(int(sys.argv[2]))
model = nn.Sequential(nn.Dense(256, 256))
for _ in range(int(sys.argv[3])):
    nn.save(model, sys.argv[1], metadata={"writer": sys.argv[2]})
print("saved", flush=True)
"""


def test_two_processes_saving_one_target_never_remove_each_others_partial(
        tmp_path: Path) -> None:
    """Each save removes the target's stale partials first; with every unlocked partial
    counted as stale, only the lock keeps a save from removing the other's live one."""
    pytest.importorskip("fcntl", reason="partials are locked with fcntl.flock (POSIX)")
    pytest.importorskip("safetensors", reason="saving checkpoints needs safetensors")
    import nnscratch as nn
    from nnscratch.io import read_metadata

    dest = tmp_path / "model.safetensors"
    env = {**os.environ, "NNSCRATCH_BACKEND": "numpy"}
    env.pop("NNSCRATCH_DEVICE", None)
    writers = [
        subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(dest), str(writer), "60"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for writer in (1, 2)
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0 and out.strip() == "saved", err[-3000:]
    assert read_metadata(dest)["writer"] in {"1", "2"}
    with nn.use_backend("numpy"):
        assert nn.load(dest).layers[0].weight.shape == (256, 256)
    assert not list(tmp_path.glob("*.part"))
