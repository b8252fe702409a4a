"""The digit app: draw a digit and watch a trained network read it, or watch one learn.

    pip install 'nnscratch[app]'
    python -m nnscratch.app [--model digits.safetensors] [--host 127.0.0.1] [--port 8000]

Two pages, served from files inside the package (no CDN, works offline): Draw (``/``)
and Train (``/train``). The logic lives in :mod:`nnscratch.app.core` (plain classes,
no HTTP); :mod:`nnscratch.app.server` puts FastAPI routes over it. Importing this
package needs neither FastAPI nor uvicorn; starting the server does.
"""
