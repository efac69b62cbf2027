// The emorec page: pick or drop a photo, see the top emotions as bars; with a face model, each
// face boxed with its label; with the torch backend, a Grad-CAM overlay to toggle; with a camera,
// live boxes and labels over the video and a timeline of the last minute.
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
    const error = new Error("this server needs an API key");
    error.status = 401;
    throw error;
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
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
  for (const face of faces || []) boxes.appendChild(faceBox(face, w, h));
}

// A face's box and top label, placed in percent of a picture whose own pixels are width x height
// (the API's boxes are in the uploaded picture's pixels).
function faceBox(face, width, height) {
  const [x1, y1, x2, y2] = face.box;
  const box = document.createElement("div");
  box.className = "face";
  box.style.left = (100 * x1 / width) + "%";
  box.style.top = (100 * y1 / height) + "%";
  box.style.width = (100 * (x2 - x1) / width) + "%";
  box.style.height = (100 * (y2 - y1) / height) + "%";
  const tag = document.createElement("span");
  const best = face.top_k[0];
  tag.textContent = best.label + " " + (100 * best.probability).toFixed(0) + "%";
  box.appendChild(tag);
  return box;
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

// Camera mode. One request in flight at most: the next frame is taken when the answer arrives,
// so a slow server lowers the frame rate instead of building a queue of stale frames.
const CAMERA_TOP_K = 3;
const TIMELINE_MS = 60_000;
const FPS_WINDOW_MS = 5_000;
const RETRY_MS = 1_000;
const COLOURS = ["#3a6ea5", "#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#c92a2a", "#0c8599", "#495057"];
let camera = null;      // {stream, started, answered: [ms], timeline: [{t, probs}]} while the camera runs

function colourOf(label) {
  const i = info ? info.labels.indexOf(label) : -1;
  return COLOURS[(i < 0 ? 0 : i) % COLOURS.length];
}

function grabFrame(video, canvas) {
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

// Face boxes come in the sent frame's pixels; percentages of that frame follow the video's
// displayed size, whatever the page width.
function drawCameraBoxes(prediction, width, height) {
  const boxes = $("camera-boxes");
  boxes.replaceChildren();
  if (!prediction.faces) {
    const best = prediction.top_k[0];
    const tag = document.createElement("span");
    tag.className = "frame-label";
    tag.textContent = best.label + " " + (100 * best.probability).toFixed(0) + "%";
    boxes.appendChild(tag);
    return;
  }
  for (const face of prediction.faces) boxes.appendChild(faceBox(face, width, height));
}

// The timeline follows the largest face (the one nearest the camera), or the whole frame
// when the server finds no faces.
function topScores(prediction) {
  let entries = prediction.top_k;
  if (prediction.faces) {
    if (!prediction.faces.length) return null;
    const area = (f) => (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]);
    entries = prediction.faces.reduce((a, b) => (area(b) > area(a) ? b : a)).top_k;
  }
  return Object.fromEntries(entries.map((e) => [e.label, e.probability]));
}

function drawLegend() {
  const legend = $("camera-legend");
  legend.replaceChildren(...(info ? info.labels : []).map((label) => {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourOf(label);
    item.append(swatch, label);
    return item;
  }));
}

// Only the top CAMERA_TOP_K labels of each frame are known: a label's line breaks where it
// fell out of them rather than pretending it was zero.
function drawTimeline(now) {
  const canvas = $("camera-timeline");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 4;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#eaecf0";
  ctx.lineWidth = 1;
  for (const level of [0.25, 0.5, 0.75]) {
    ctx.beginPath();
    ctx.moveTo(0, pad + (1 - level) * (h - 2 * pad));
    ctx.lineTo(w, pad + (1 - level) * (h - 2 * pad));
    ctx.stroke();
  }
  ctx.fillStyle = "#667085";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(TIMELINE_MS / 1000 + " s ago", pad, pad);
  ctx.textAlign = "right";
  ctx.fillText("now", w - pad, pad);
  const x = (t) => w - (now - t) / TIMELINE_MS * w;
  const y = (p) => pad + (1 - p) * (h - 2 * pad);
  ctx.lineWidth = 2;
  for (const label of info ? info.labels : []) {
    ctx.strokeStyle = colourOf(label);
    ctx.beginPath();
    let drawing = false;
    for (const sample of camera.timeline) {
      const p = sample.probs ? sample.probs[label] : undefined;
      if (p === undefined) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(sample.t), y(p));
      else ctx.moveTo(x(sample.t), y(p));
      drawing = true;
    }
    ctx.stroke();
  }
}

function showFps(now) {
  const answered = camera.answered;
  while (answered.length && answered[0] < now - FPS_WINDOW_MS) answered.shift();
  const span = Math.min(FPS_WINDOW_MS, now - camera.started);
  $("camera-fps").textContent = span > 0 ? (1000 * answered.length / span).toFixed(1) : "-";
}

async function cameraLoop(session) {
  const video = $("camera-video");
  const canvas = document.createElement("canvas");
  const faces = Boolean(info && info.faces);
  const path = "/v1/predict?top_k=" + CAMERA_TOP_K + (faces ? "&faces=true" : "");
  while (camera === session) {
    const blob = await grabFrame(video, canvas);
    if (!blob) { await new Promise((r) => setTimeout(r, RETRY_MS)); continue; }
    const width = canvas.width, height = canvas.height;
    const form = new FormData();
    form.append("image", blob, "camera.jpg");
    let prediction;
    try {
      prediction = (await (await api(path, { method: "POST", body: form })).json()).predictions[0];
    } catch (e) {
      if (camera !== session) return;
      setStatus("camera: " + e.message, true);
      if (e.status === 401) { stopCamera("camera: " + e.message); return; }
      await new Promise((r) => setTimeout(r, RETRY_MS));
      continue;
    }
    if (camera !== session) return;
    const now = performance.now();
    session.answered.push(now);
    session.timeline.push({ t: now, probs: topScores(prediction) });
    while (session.timeline.length && session.timeline[0].t < now - TIMELINE_MS) session.timeline.shift();
    drawCameraBoxes(prediction, width, height);
    drawTimeline(now);
    showFps(now);
    const n = prediction.faces ? prediction.faces.length : null;
    setStatus("camera: " + (n === null ? prediction.top_k[0].label + " (whole frame)" : n + " face" + (n === 1 ? "" : "s")));
  }
}

async function startCamera() {
  if (camera) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser offers no camera here (it needs https or localhost)", true);
    return;
  }
  if (!info) await loadInfo();  // whether to ask for faces
  let stream;
  $("camera-start").disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (e) {
    setStatus("camera: " + e.message, true);
    return;
  } finally {
    $("camera-start").disabled = false;
  }
  const video = $("camera-video");
  video.srcObject = stream;
  await video.play().catch(() => {});
  if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadedmetadata", r, { once: true }));
  camera = { stream, started: performance.now(), answered: [], timeline: [] };
  $("camera").hidden = false;
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  $("camera-fps").textContent = "-";
  $("camera-timeline-title").textContent = info && info.faces ? "the largest face, last minute" : "the whole frame, last minute";
  drawLegend();
  setStatus("camera: asking the model...");
  cameraLoop(camera);
}

function stopCamera(message = "camera stopped") {
  if (!camera) return;
  for (const track of camera.stream.getTracks()) track.stop();
  camera = null;
  $("camera-video").srcObject = null;
  $("camera-boxes").replaceChildren();
  $("camera").hidden = true;
  $("camera-start").hidden = false;
  $("camera-stop").hidden = true;
  setStatus(message, message !== "camera stopped");
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
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", () => stopCamera());
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
