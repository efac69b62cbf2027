// The emorec page: pick or drop a photo, see the top emotions as bars; with a face model, each
// face boxed with its label; with the torch backend, a Grad-CAM overlay to toggle.
// Plain DOM code, no framework and no CDN: the page must work offline, under a strict CSP.
"use strict";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);
let info = null;        // GET /v1/model
let current = null;     // the File on show
let heatFor = null;     // the File the overlay was computed for
let apiKey = sessionStorage.getItem("emorec-key") || "";

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("this server needs an API key");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function loadInfo() {
  try {
    info = await (await api("/v1/model")).json();
    $("model-line").textContent = info.labels.length + " labels (" + info.labels.join(", ") + "), " + info.backend + " backend";
    $("faces-option").hidden = !info.faces;
    $("explain").disabled = !info.explain;
    $("explain-option").title = info.explain ? "" : "needs the torch backend (emorec serve RUN --backend torch)";
  } catch (e) {
    $("model-line").textContent = "model description unavailable: " + e.message;
  }
}

function barRow(entry) {
  const row = document.createElement("div");
  row.className = "bar-row";
  row.dataset.label = entry.label;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = entry.label;
  const track = document.createElement("span");
  track.className = "track";
  const fill = document.createElement("span");
  fill.className = "fill";
  fill.style.width = (100 * entry.probability).toFixed(1) + "%";
  track.appendChild(fill);
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = (100 * entry.probability).toFixed(1) + "%";
  row.append(label, track, pct);
  return row;
}

function drawBars(topK) {
  const bars = $("bars");
  bars.replaceChildren(...topK.map(barRow));
}

function drawFaces(faces) {
  const boxes = $("boxes");
  boxes.replaceChildren();
  const photo = $("photo");
  const w = photo.naturalWidth, h = photo.naturalHeight;
  for (const face of faces || []) {
    const [x1, y1, x2, y2] = face.box;
    const box = document.createElement("div");
    box.className = "face";
    box.style.left = (100 * x1 / w) + "%";
    box.style.top = (100 * y1 / h) + "%";
    box.style.width = (100 * (x2 - x1) / w) + "%";
    box.style.height = (100 * (y2 - y1) / h) + "%";
    const tag = document.createElement("span");
    const best = face.top_k[0];
    tag.textContent = best.label + " " + (100 * best.probability).toFixed(0) + "%";
    box.appendChild(tag);
    boxes.appendChild(box);
  }
}

async function showPhoto(file) {
  const photo = $("photo");
  if (photo.src) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  await photo.decode().catch(() => {});  // the server decides whether it is an image
}

async function predict(file) {
  current = file;
  document.body.dataset.state = "working";
  setStatus("asking the model...");
  $("heat").hidden = true;
  $("boxes").replaceChildren();
  await showPhoto(file);
  const form = new FormData();
  form.append("image", file, file.name);
  const faces = !$("faces-option").hidden && $("faces").checked;
  try {
    const answer = await (await api("/v1/predict?top_k=" + TOP_K + "&faces=" + faces, { method: "POST", body: form })).json();
    const prediction = answer.predictions[0];
    $("result").hidden = false;
    drawBars(prediction.top_k);
    drawFaces(prediction.faces);
    const n = prediction.faces ? prediction.faces.length : null;
    setStatus(file.name + ": " + prediction.top_k[0].label + (n === null ? "" : ", " + n + " face" + (n === 1 ? "" : "s")));
    document.body.dataset.state = "done";
    if ($("explain").checked) await showExplanation();
  } catch (e) {
    setStatus(file.name + ": " + e.message, true);
    document.body.dataset.state = "error";
  }
}

async function showExplanation() {
  const heat = $("heat");
  if (!$("explain").checked || !current) { heat.hidden = true; return; }
  if (heatFor !== current) {
    const form = new FormData();
    form.append("image", current, current.name);
    try {
      const blob = await (await api("/v1/explain", { method: "POST", body: form })).blob();
      if (heat.src) URL.revokeObjectURL(heat.src);
      heat.src = URL.createObjectURL(blob);
      heatFor = current;
    } catch (e) {
      setStatus("explanation: " + e.message, true);
      return;
    }
  }
  heat.hidden = false;
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) predict(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) predict(e.dataTransfer.files[0]);
  });
  $("explain").addEventListener("change", showExplanation);
  $("faces").addEventListener("change", () => { if (current) predict(current); });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey = $("key").value.trim();
    sessionStorage.setItem("emorec-key", apiKey);
    $("key-form").hidden = true;
    loadInfo().then(() => { if (current) predict(current); });
  });
  loadInfo();
}

document.addEventListener("DOMContentLoaded", init);
