// The Train page: start a run, then draw its server-sent events: loss and accuracy per
// epoch, progress within the epoch, the first layer's weights, the digits it gets wrong.
"use strict";

const form = document.getElementById("settings");
const startButton = document.getElementById("start");
const stopButton = document.getElementById("stop");
const saveButton = document.getElementById("save");
const stateLine = document.getElementById("state");
const progressBar = document.getElementById("epoch-progress");
const progressText = document.getElementById("progress-text");
const saveResult = document.getElementById("save-result");
const SVG = "http://www.w3.org/2000/svg";
const STORED = "nnscratch.train.settings"; // the form's values, kept across reloads
const FIELDS = ["hidden", "epochs", "lr", "batch-size", "limit"];

let source = null;
let run = freshRun();
let trainedHere = false; // a model trained in this app exists: Save applies to it

function freshRun() {
  return { epochs: 1, loss: [], valLoss: [], accuracy: [], valAccuracy: [] };
}

// A message's first line is shown; the lines after it (an error's details: the mirrors
// tried, say) wait behind a "details" toggle, so that a long error keeps the page's shape.
function setState(text, state) {
  const [first, ...rest] = String(text).split("\n");
  stateLine.textContent = first;
  if (rest.join("").trim()) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    const more = document.createElement("pre");
    summary.textContent = "details";
    more.textContent = rest.join("\n");
    details.append(summary, more);
    stateLine.append(details);
  }
  stateLine.dataset.state = state;
  stateLine.classList.toggle("error", state === "error");
}

function running(yes) {
  startButton.disabled = yes;
  stopButton.disabled = !yes;
  saveButton.disabled = yes || !trainedHere;
}

// -- starting and following a run ------------------------------------------------------

// The form's settings for POST /api/train; a string (what is wrong) if they cannot be.
function settings() {
  const number = (id) => Number(document.getElementById(id).value);
  const typed = document.getElementById("hidden").value;
  const parts = typed.split(/[\s,]+/).filter(Boolean);
  if (!parts.length || !parts.every((part) => /^\d+$/.test(part))) {
    return `Hidden layers takes widths, whole numbers separated by commas (e.g. 128 or `
      + `256,128); got "${typed}"`;
  }
  return { hidden: parts.map(Number), epochs: number("epochs"), lr: number("lr"),
           batch_size: number("batch-size"), limit: number("limit") };
}

function storeForm() {
  const values = {};
  for (const id of FIELDS) values[id] = document.getElementById(id).value;
  try { localStorage.setItem(STORED, JSON.stringify(values)); } catch { /* storage off */ }
}

function fillForm(values) {
  for (const id of FIELDS) {
    if (values[id] !== undefined && values[id] !== null) {
      document.getElementById(id).value = String(values[id]);
    }
  }
}

function restoreForm() {
  try { fillForm(JSON.parse(localStorage.getItem(STORED) || "{}")); } catch { /* none */ }
}

form.addEventListener("input", storeForm);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const chosen = settings();
  if (typeof chosen === "string") {
    setState(chosen, "error");
    return;
  }
  running(true);
  setState("starting…", "running");
  const { status, body } = await nnscratch.api("/api/train", chosen);
  if (status === 202 || status === 409) {
    if (status === 409) setState(`${body.detail} Showing that run.`, "running");
    follow();
  } else {
    running(false);
    setState(body.detail, "error");
  }
});

stopButton.addEventListener("click", async () => {
  const { body } = await nnscratch.api("/api/train/stop", {});
  setState(body.detail, stateLine.dataset.state);
});

const percent = (share) => (share === null || share === undefined ? "unknown"
  : `${(100 * share).toFixed(2)}%`);

// Save says what it replaces, and asks before replacing a model that reads better.
async function save(overwrite) {
  const { ok, status, body } = await nnscratch.api("/api/save",
                                                   overwrite ? { overwrite: true } : {});
  if (status === 409 && body.saved_accuracy !== undefined) {
    const question = `${body.path} holds a model of test accuracy `
      + `${percent(body.saved_accuracy)}, better than this one's ${percent(body.accuracy)}. `
      + "Replace it?";
    if (window.confirm(question)) return save(true);
    saveResult.textContent = `not saved: ${body.path} keeps its model `
      + `(test accuracy ${percent(body.saved_accuracy)})`;
    saveResult.classList.remove("error");
    return undefined;
  }
  if (ok) {
    const replaced = body.replaced ? `, replacing a model of test accuracy `
      + `${percent(body.replaced.accuracy)}` : "";
    saveResult.textContent = `saved to ${body.path} (test accuracy ${percent(body.accuracy)})`
      + replaced;
  } else {
    saveResult.textContent = body.detail;
  }
  saveResult.classList.toggle("error", !ok);
  return undefined;
}

saveButton.addEventListener("click", () => save(false));

// The browser reconnects by itself if the connection drops, sending the id of the last
// event it got (Last-Event-ID), and the server resumes after it.
function follow() {
  if (source) source.close();
  source = new EventSource("/api/train/events");
  source.onmessage = (message) => handle(JSON.parse(message.data));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      running(false);
      setState("lost the connection to the app: reload the page", "error");
    }
  };
}

function handle(event) {
  switch (event.kind) {
    case "status":
      setState(event.message, "running");
      break;
    case "start":
      run = freshRun();
      run.epochs = event.settings.epochs;
      // The form shows the settings of the run the charts show.
      fillForm({ ...event.settings, hidden: event.settings.hidden.join(","),
                 "batch-size": event.settings.batch_size,
                 limit: event.settings.limit ?? document.getElementById("limit").max });
      storeForm();
      clearResults();
      drawCharts();
      drawWeights(event.weights);
      running(true);
      setState(`training ${event.architecture} (${event.parameters.toLocaleString()} `
        + `parameters) on ${event.train_samples.toLocaleString()} images, `
        + `backend ${event.backend}`, "running");
      break;
    case "progress":
      showProgress(event.epoch, event.epochs, event.step, event.steps, event.loss);
      if (event.weights) drawWeights(event.weights);
      break;
    case "epoch":
      run.loss.push(event.loss);
      run.valLoss.push(event.val_loss);
      run.accuracy.push(event.accuracy);
      run.valAccuracy.push(event.val_accuracy);
      drawCharts();
      drawWeights(event.weights);
      progressBar.value = progressBar.max;
      progressText.textContent = `epoch ${event.epoch}/${event.epochs} done in `
        + `${event.seconds.toFixed(1)} s · loss ${event.loss.toFixed(4)}`;
      break;
    case "done":
      source.close();
      trainedHere = true;
      running(false);
      document.getElementById("test-accuracy").textContent =
        `test accuracy ${(100 * event.test_accuracy).toFixed(2)}%`;
      drawMisclassified(event.misclassified);
      setState(`${event.stopped ? "stopped" : "done"} in ${event.seconds.toFixed(1)} s: the `
        + "Draw page now reads with this model", "done");
      nnscratch.showStatus();
      break;
    case "error":
      source.close();
      running(false);
      setState(`training failed: ${event.error}`, "error");
      break;
    default:
      break;
  }
}

function showProgress(epoch, epochs, step, steps, loss) {
  progressBar.max = steps;
  progressBar.value = step;
  const lossText = loss === null || loss === undefined ? "" : ` · loss ${loss.toFixed(4)}`;
  progressText.textContent = `epoch ${epoch}/${epochs} · step ${step}/${steps}${lossText}`;
}

function clearResults() {
  document.getElementById("misclassified").replaceChildren();
  document.getElementById("test-accuracy").textContent = "";
  document.getElementById("save-result").textContent = "";
  progressBar.value = 0;
  progressText.textContent = "";
}

// -- charts ----------------------------------------------------------------------------

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  parent.append(node);
  return node;
}

function drawCharts() {
  const values = (list) => list.filter((v) => v !== null);
  const losses = values([...run.loss, ...run.valLoss]);
  const accuracies = values([...run.accuracy, ...run.valAccuracy]);
  drawChart(document.getElementById("loss-chart"), [run.loss, run.valLoss],
            0, Math.max(0.1, ...losses) * 1.05, (v) => v.toFixed(2));
  const low = Math.min(0.9, ...accuracies);
  drawChart(document.getElementById("accuracy-chart"), [run.accuracy, run.valAccuracy],
            Math.max(0, Math.floor(low * 20) / 20), 1, (v) => `${Math.round(100 * v)}%`);
}

// Two series (training, validation) over epochs 1..run.epochs, y from low to high.
function drawChart(svg, [train, validation], low, high, label) {
  svg.replaceChildren();
  const [width, height, left, right, top, bottom] = [360, 220, 44, 12, 26, 32];
  const x = (epoch) => (run.epochs === 1 ? (left + width - right) / 2
    : left + ((epoch - 1) * (width - left - right)) / (run.epochs - 1));
  const y = (v) => top + ((high - v) * (height - top - bottom)) / (high - low || 1);
  for (let i = 0; i <= 4; i++) {
    const v = low + ((high - low) * i) / 4;
    element("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }, svg);
    element("text", { x: left - 6, y: y(v) + 3, "text-anchor": "end" }, svg)
      .textContent = label(v);
  }
  const every = Math.ceil(run.epochs / 10);
  for (let epoch = 1; epoch <= run.epochs; epoch += every) {
    element("text", { x: x(epoch), y: height - bottom + 14, "text-anchor": "middle" }, svg)
      .textContent = String(epoch);
  }
  element("text", { x: (left + width) / 2, y: height - 4, "text-anchor": "middle" }, svg)
    .textContent = "epoch";
  element("line", { class: "axis", x1: left, x2: left, y1: top, y2: height - bottom }, svg);
  element("line", { class: "axis", x1: left, x2: width - right, y1: height - bottom,
                    y2: height - bottom }, svg);
  [[train, "train", "training"], [validation, "val", "validation"]].forEach(
    ([series, kind, name], index) => {
      const points = series.map((v, i) => [x(i + 1), v]).filter(([, v]) => v !== null);
      element("polyline", { class: `line ${kind}`,
                            points: points.map(([px, v]) => `${px},${y(v)}`).join(" ") }, svg);
      for (const [px, v] of points) {
        const dot = element("circle", { class: `point ${kind}`, cx: px, cy: y(v), r: 3 }, svg);
        element("title", {}, dot).textContent = `${name}: ${label(v)} (${v.toFixed(4)})`;
      }
      // The legend, above the plot: a dot and the series' name.
      const legendX = left + 8 + 90 * index;
      element("circle", { class: kind, cx: legendX, cy: 12, r: 3 }, svg);
      element("text", { class: kind, x: legendX + 7, y: 15 }, svg).textContent = name;
    });
}

// -- pictures --------------------------------------------------------------------------

// Weight tiles: 127.5 is zero; red for positive weights, blue for negative ones.
function diverging(level) {
  const t = (level - 127.5) / 127.5;
  const fade = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
}

function drawWeights(weights) {
  if (!weights) return;
  const box = document.getElementById("weights");
  const bytes = nnscratch.bytes(weights.data);
  const size = weights.side * weights.side;
  while (box.children.length > weights.count) box.lastChild.remove();
  while (box.children.length < weights.count) box.append(document.createElement("canvas"));
  for (let unit = 0; unit < weights.count; unit++) {
    nnscratch.paint(box.children[unit], bytes.subarray(unit * size, (unit + 1) * size),
                    weights.side, diverging);
  }
}

function drawMisclassified(wrong) {
  const box = document.getElementById("misclassified");
  box.replaceChildren();
  const bytes = nnscratch.bytes(wrong.data);
  const size = wrong.side * wrong.side;
  for (let i = 0; i < wrong.count; i++) {
    const tile = document.createElement("figure");
    tile.className = "tile";
    const canvas = document.createElement("canvas");
    nnscratch.paint(canvas, bytes.subarray(i * size, (i + 1) * size), wrong.side,
                    nnscratch.grey);
    const caption = document.createElement("figcaption");
    caption.textContent = `${wrong.labels[i]} read as ${wrong.predicted[i]}`;
    tile.append(canvas, caption);
    box.append(tile);
  }
  if (wrong.count === 0) box.textContent = "none: every test digit is read right";
}

// -- the page --------------------------------------------------------------------------

restoreForm();
drawCharts();
nnscratch.showStatus().then((status) => {
  if (!status) return;
  document.getElementById("backend").textContent = status.backend;
  trainedHere = status.trained;
  running(Boolean(status.training && status.training.running));
  if (status.training) follow(); // show the latest run, finished or going
});
