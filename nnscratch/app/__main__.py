"""``python -m nnscratch.app``: start the digit app's web server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nnscratch.errors import ConfigError, NNScratchError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nnscratch.app",
        description="The digit app: draw a digit and watch a trained network read it, or "
                    "train one and watch it learn, in the browser.")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a model saved by examples/mnist.py --save or nn.save; a "
                        "model trained in the app is saved here (default: no model until "
                        "one is trained; saved as ./digits.safetensors if that is free)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="MNIST folder for training (default: $NNSCRATCH_DATA, else the "
                        "per-user cache, downloading it there if missing)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download MNIST; training fails if it is not found")
    parser.add_argument("--log-level", default="warning",
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default warning)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, got {args.port}")
    return args


def _server_packages() -> tuple[object, object]:
    try:
        import uvicorn

        from nnscratch.app import server
    except ImportError as err:
        raise ConfigError(f"the digit app needs FastAPI and uvicorn ({err.name} is missing): "
                          "pip install 'nnscratch[app]'") from err
    return server, uvicorn


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server, uvicorn = _server_packages()
        import nnscratch as nn
        from nnscratch.app.core import AppState, load_reader

        reader = None
        if args.model is not None:
            model_path = Path(args.model)
            if model_path.is_file():
                reader = load_reader(model_path)
            elif model_path.exists():
                raise ConfigError(f"--model {args.model} is not a file: name a .safetensors "
                                  "file (it need not exist yet)")
            else:
                print(f"no model at {args.model} yet: train one on the Train page; it will "
                      "be saved there", file=sys.stderr)
        state = AppState(reader, save_path=args.model, data_root=args.data,
                         download=not args.no_download)
    except NNScratchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}, not only on this machine: anyone who can "
              "reach this port can use the app and start training runs (there is no login). "
              "Use --host 127.0.0.1 unless you mean it.", file=sys.stderr)
    # on loopback, only requests naming this machine are answered (no DNS rebinding)
    allowed_hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if args.host in LOOPBACK \
        else None
    app = server.create_app(state, allowed_hosts=allowed_hosts)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    model = reader.describe()["architecture"] + f" from {args.model}" if reader else "none yet"
    print(f"nnscratch digit app on http://{shown_host}:{args.port}/  (backend "
          f"{nn.get_backend()}, model: {model}; Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
