// The demo page: ask /v1/predict about a text and an optional audio/video clip, draw the answer.
// Plain DOM, nothing fetched from elsewhere; URLs are relative so a reverse proxy may add a prefix.
"use strict";

const $ = (id) => document.getElementById(id);
let models = {};
let recorded = null; // {blob, kind: "audio" | "video"} from MediaRecorder
let recorder = null;

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
}

function fixed(v, digits = 3) {
  return (v >= 0 ? "+" : "") + Number(v).toFixed(digits);
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ---- bar charts ------------------------------------------------------------------------------
function bars(container, values, centred) {
  container.replaceChildren();
  const names = Object.keys(values);
  const top = Math.max(1e-9, ...names.map((n) => Math.abs(values[n])));
  for (const n of names) {
    const v = values[n];
    const track = el("div", { class: "track" + (centred ? " centred" : "") });
    const fill = el("div", { class: "fill" + (centred ? (v >= 0 ? " pos" : " neg") : "") });
    const width = (Math.abs(v) / top) * (centred ? 50 : 100);
    fill.style.width = width + "%";
    fill.style.left = centred ? (v >= 0 ? "50%" : 50 - width + "%") : "0";
    track.append(fill);
    container.append(el("span", { class: "name" }, n), track, el("span", { class: "value" }, centred ? fixed(v) : v.toFixed(3)));
  }
}

// ---- the answer ------------------------------------------------------------------------------
function show(answer) {
  const card = models[answer.model] || {};
  const regression = answer.score !== null && answer.score !== undefined;
  $("regression").hidden = !regression;
  $("classification").hidden = regression;
  if (regression) {
    const [lo, hi] = card.label_range || [-3, 3];
    $("lo").textContent = lo;
    $("hi").textContent = "+" + hi;
    const at = Math.min(1, Math.max(0, (answer.score - lo) / (hi - lo)));
    $("marker").style.left = at * 100 + "%";
    $("score").textContent = fixed(answer.score, 2);
    $("polarity").textContent = answer.polarity || "";
    $("polarity").className = "polarity " + (answer.polarity || "");
  } else {
    $("label").textContent = answer.label;
    bars($("probabilities"), answer.probabilities || {}, false);
  }
  bars($("contributions"), answer.contributions, true);
  $("missing").textContent = answer.missing.length
    ? "Not given, read as missing: " + answer.missing.join(", ") + "."
    : "";
  const diag = answer.diagnostics || {};
  $("diag-block").hidden = Object.keys(diag).length === 0;
  bars($("diagnostics"), diag, false);
  $("result").hidden = false;
}

// ---- the model card --------------------------------------------------------------------------
function showCard(card) {
  const facts = $("facts");
  facts.replaceChildren();
  const add = (k, v) => {
    if (v === null || v === undefined || v === "") return;
    facts.append(el("dt", {}, k), el("dd", {}, v));
  };
  add("model", card.title);
  add("architecture", card.model);
  add("task", card.task + (card.class_names ? " (" + card.class_names.join(", ") + ")" : ""));
  add("dataset", card.dataset ? card.dataset.name : "not recorded");
  add("modalities", card.modalities.join(", "));
  add("text encoder", card.text_encoder ? card.text_encoder.description : "none");
  const ex = Object.entries(card.extractors || {}).map(([m, e]) => m + ": " + e.name + " (" + (e.package || "") + " " + (e.version || "") + ")");
  add("extractors", ex.join("; ") || "none (text only, or features given)");
  const metrics = $("metrics");
  metrics.replaceChildren();
  for (const t of card.metrics) {
    if (!t.rows.length) continue;
    const table = el("table");
    table.append(el("caption", {}, t.caption));
    const cols = Object.keys(t.rows[0]);
    const head = el("tr");
    cols.forEach((c) => head.append(el("th", {}, c)));
    table.append(head);
    for (const r of t.rows) {
      const tr = el("tr");
      cols.forEach((c) => tr.append(el("td", {}, r[c])));
      table.append(tr);
    }
    metrics.append(table);
  }
  $("card").textContent = card.card;
  $("card-block").hidden = false;
  $("model-hint").textContent = "Reads " + card.modalities.join(", ") + ".";
  const media = card.modalities.includes("audio") || card.modalities.includes("vision");
  $("media-block").hidden = !media;
  $("rec-audio").hidden = !card.modalities.includes("audio");
  $("rec-video").hidden = !card.modalities.includes("vision");
}

async function loadModels() {
  const res = await fetch("v1/models");
  const data = await res.json();
  const select = $("model");
  for (const card of data.models) {
    models[card.name] = card;
    select.append(el("option", { value: card.name }, card.name + " (" + card.title + ")"));
  }
  select.value = data.default;
  showCard(models[data.default]);
  select.addEventListener("change", () => showCard(models[select.value]));
}

// ---- recording -------------------------------------------------------------------------------
function setupRecorder() {
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder)) return;
  $("recorder").hidden = false;
  const start = async (kind) => {
    showError("");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: kind === "video" });
    } catch (e) {
      showError("Recording is not possible here: " + e.message);
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      recorded = { blob: new Blob(chunks, { type: recorder.mimeType }), kind };
      const preview = $("preview");
      preview.srcObject = null;
      preview.src = URL.createObjectURL(recorded.blob);
      preview.controls = true;
      preview.muted = false;
      $("rec-status").textContent = "recorded " + kind + " (" + Math.round(recorded.blob.size / 1024) + " KiB)";
      $("rec-clear").disabled = false;
    };
    const preview = $("preview");
    preview.hidden = kind !== "video";
    preview.srcObject = stream;
    if (kind === "video") preview.play();
    recorder.start();
    $("rec-status").textContent = "recording " + kind + "…";
    $("rec-stop").disabled = false;
  };
  $("rec-audio").addEventListener("click", () => start("audio"));
  $("rec-video").addEventListener("click", () => start("video"));
  $("rec-stop").addEventListener("click", () => {
    if (recorder && recorder.state !== "inactive") recorder.stop();
    $("rec-stop").disabled = true;
  });
  $("rec-clear").addEventListener("click", () => {
    recorded = null;
    $("preview").hidden = true;
    $("rec-status").textContent = "";
    $("rec-clear").disabled = true;
  });
}

// ---- asking ----------------------------------------------------------------------------------
async function predict(event) {
  event.preventDefault();
  showError("");
  const text = $("text").value;
  const model = $("model").value;
  const file = $("media").files[0];
  let body;
  let headers = {};
  if (file || recorded) {
    body = new FormData();
    body.append("text", text);
    body.append("model", model);
    if (recorded) {
      const ext = recorded.blob.type.includes("ogg") ? ".ogg" : recorded.blob.type.includes("mp4") ? ".mp4" : ".webm";
      body.append(recorded.kind, recorded.blob, "recording" + ext);
    } else {
      body.append(file.type.startsWith("video") ? "video" : "audio", file, file.name);
    }
  } else {
    headers = { "Content-Type": "application/json" };
    body = JSON.stringify({ text, model });
  }
  $("busy").hidden = false;
  $("predict").disabled = true;
  try {
    const res = await fetch("v1/predict", { method: "POST", headers, body });
    const data = await res.json().catch(() => ({ detail: "the server answered " + res.status }));
    if (!res.ok) {
      showError(data.detail || "the server answered " + res.status);
      return;
    }
    show(data);
  } catch (e) {
    showError("No answer from the server: " + e.message);
  } finally {
    $("busy").hidden = true;
    $("predict").disabled = false;
  }
}

$("form").addEventListener("submit", predict);
setupRecorder();
loadModels().catch((e) => showError("Cannot list the models: " + e.message));
