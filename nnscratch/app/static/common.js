// Shared by both pages: calling the API, and the model line in the header.
"use strict";

const nnscratch = {
  // POST or GET a JSON API; resolves to {ok, status, body} (never rejects on HTTP errors).
  async api(path, payload) {
    const options = payload === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    };
    try {
      const response = await fetch(path, options);
      const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
      return { ok: response.ok, status: response.status, body };
    } catch (error) {
      return { ok: false, status: 0, body: { detail: `the app does not answer (${error})` } };
    }
  },

  async showStatus() {
    const { ok, body } = await nnscratch.api("/api/status");
    const line = document.getElementById("model");
    if (!ok) {
      line.textContent = "the app does not answer";
      return null;
    }
    line.textContent = body.model
      ? `model ${body.model.architecture} · ${body.model.source} · ${body.backend}`
      : `no model yet · ${body.backend}`;
    return body;
  },

  // base64 -> Uint8Array
  bytes(text) {
    const raw = atob(text);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  },

  // Paint side x side values (0-255) onto a canvas; colour(v) -> [r, g, b].
  paint(canvas, values, side, colour) {
    canvas.width = side;
    canvas.height = side;
    const context = canvas.getContext("2d");
    const image = context.createImageData(side, side);
    for (let i = 0; i < side * side; i++) {
      const [r, g, b] = colour(values[i]);
      image.data.set([r, g, b, 255], 4 * i);
    }
    context.putImageData(image, 0, 0);
  },

  grey: (v) => [v, v, v],
};
