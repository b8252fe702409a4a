// The Draw page: a pad for mouse, touch and pen (pointer events), read by the network at
// the end of each stroke and, at most every PREDICT_INTERVAL_MS, while drawing.
"use strict";

const PREDICT_INTERVAL_MS = 200;
const STROKE_WIDTH = 20; // canvas pixels on a 280-pixel pad: like a pen on MNIST's 28

const pad = document.getElementById("pad");
const context = pad.getContext("2d", { willReadFrequently: true });
const predictionOutput = document.getElementById("prediction");
const message = document.getElementById("message");
const bars = document.getElementById("probabilities");
const seen = document.getElementById("input");

let drawing = false;
let last = null;
let inked = false;
let timer = null;
let sent = 0; // requests made
let shown = 0; // the newest request whose answer is on the page

// -- the pad ---------------------------------------------------------------------------

function clearPad() {
  context.fillStyle = "#000";
  context.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

function position(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function line(from, to) {
  context.strokeStyle = "#fff";
  context.fillStyle = "#fff";
  context.lineWidth = STROKE_WIDTH;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.beginPath();
  context.moveTo(from.x, from.y);
  context.lineTo(to.x, to.y);
  context.stroke();
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  pad.dataset.lastPointer = event.pointerType; // mouse, touch or pen
  drawing = true;
  last = position(event);
  line(last, last); // a dot, for a tap
  schedulePrediction();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  // The points the browser merged into this event, for smooth fast strokes.
  const points = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const point of points.length ? points : [event]) {
    const next = position(point);
    line(last, next);
    last = next;
  }
  schedulePrediction();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  clearTimeout(timer);
  timer = null;
  predict();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function schedulePrediction() {
  if (timer === null) {
    timer = setTimeout(() => {
      timer = null;
      if (drawing) predict();
    }, PREDICT_INTERVAL_MS);
  }
}

// -- asking the network ----------------------------------------------------------------

// The pad's grey levels (ink bright on dark, as MNIST), one list per row.
function pixels() {
  const { data } = context.getImageData(0, 0, pad.width, pad.height);
  const rows = [];
  for (let y = 0; y < pad.height; y++) {
    const row = new Array(pad.width);
    for (let x = 0; x < pad.width; x++) row[x] = data[4 * (y * pad.width + x)];
    rows.push(row);
  }
  return rows;
}

async function predict() {
  const request = ++sent;
  const { ok, status, body } = await nnscratch.api("/api/predict", { image: pixels() });
  if (request < shown) return body; // a newer answer is already on the page
  shown = request;
  if (ok) {
    showResult(body);
  } else {
    showError(status, body.detail);
  }
  return body;
}

function showResult(result) {
  predictionOutput.textContent = String(result.digit);
  message.textContent = "";
  message.classList.remove("error");
  result.probabilities.forEach((p, digit) => {
    const row = bars.children[digit];
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
    row.classList.toggle("top", digit === result.digit);
  });
  const side = result.input.length;
  nnscratch.paint(seen, result.input.flat().map((v) => Math.round(255 * v)), side,
                  nnscratch.grey);
  window.digitApp.lastResult = result;
}

function showError(status, detail) {
  predictionOutput.textContent = "";
  message.classList.add("error");
  message.textContent = detail || `HTTP ${status}`;
  if (status === 503) {
    message.append(" ");
    const link = document.createElement("a");
    link.href = "/train";
    link.textContent = "Go to the Train page.";
    message.append(link);
  }
}

function clearAll() {
  clearPad();
  shown = sent; // answers still in flight are for the old drawing
  predictionOutput.textContent = "";
  message.textContent = "";
  message.classList.remove("error");
  for (const row of bars.children) {
    row.classList.remove("top");
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".value").textContent = "";
  }
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  window.digitApp.lastResult = null;
}

// -- the page --------------------------------------------------------------------------

function buildBars() {
  for (let digit = 0; digit < 10; digit++) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.digit = String(digit);
    row.innerHTML = `<span class="digit">${digit}</span><span class="bar"><span class="fill">`
      + `</span></span><span class="value"></span>`;
    bars.append(row);
  }
}

document.getElementById("clear").addEventListener("click", clearAll);
buildBars();
clearPad();
// For scripts and tests: ask for a reading of the pad as it is now.
window.digitApp = { predict, clear: clearAll, lastResult: null };
nnscratch.showStatus().then((status) => {
  if (status && !status.model) {
    showError(503, "No model yet: train one on the Train page, or start the app with "
      + "--model digits.safetensors (python examples/mnist.py --save digits.safetensors "
      + "makes one).");
  }
});
