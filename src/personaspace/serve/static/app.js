// personaspace live drift web app: chat with the served model and watch each reply's
// projection on the Assistant Axis (per turn and per token), with the calibrated
// thresholds, capping on/off, a capped-vs-uncapped compare mode and transcript replay.
// Talks to the same server's OpenAI-compatible API (streamed) and /personaspace/*.
"use strict";

const COLORS = { main: "#1d1d1f", capped: "#b3261e", uncapped: "#1a73e8", transcript: "#6a3d9a" };
const THRESHOLD_COLORS = { p10: "#9aa0a6", p25: "#e8710a", p50: "#34a853" };

const state = {
  info: null,
  key: localStorage.getItem("personaspace-api-key") || "",
  mode: "single", // "single" | "compare"
  system: "",
  series: {}, // name -> {label, history: [{role, content}], points: [{turn, projection, engaged}]}
  lastTokens: {}, // name -> {text: [...], projection: {layer: [...]}}
  busy: false,
};

const $ = (id) => document.getElementById(id);
let turnChart = null;
let tokenChart = null;

// --- HTTP ----------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h.Authorization = `Bearer ${state.key}`;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch (_e) {
    return `HTTP ${response.status}`;
  }
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    $("key-box").hidden = false;
    throw new Error("this server needs an API key: enter it above");
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

// Stream one chat completion; onDelta(text) for each piece; resolves to the final extension.
async function streamChat(messages, options, onDelta) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({
      model: state.info.model,
      messages,
      stream: true,
      max_tokens: Number($("max-tokens").value) || 128,
      temperature: Number($("temperature").value) || 0,
      personaspace: options,
    }),
  });
  if (response.status === 401) $("key-box").hidden = false;
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let extension = null;
  let finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = chunk.choices && chunk.choices[0];
        if (choice && choice.delta && choice.delta.content) onDelta(choice.delta.content);
        if (choice && choice.finish_reason) finish = choice.finish_reason;
        if (chunk.personaspace) extension = chunk.personaspace;
      }
    }
  }
  if (!extension) throw new Error("the stream ended without a result");
  return { extension, finish };
}

// --- UI helpers ------------------------------------------------------------------------
function setBusy(busy, text) {
  state.busy = busy;
  document.body.dataset.busy = busy ? "1" : "0";
  $("send").disabled = busy;
  $("status").textContent = text || "";
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function layer() {
  return Number($("layer").value);
}

function bubble(role, text, series) {
  const div = document.createElement("div");
  div.className = `msg ${role}` + (series && series !== "main" ? ` ${series}` : "");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "assistant" && series && series !== "main" ? series : role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  return div;
}

function addTurnRow(children) {
  const row = document.createElement("div");
  row.className = "turn";
  row.append(...children);
  $("messages").append(row);
  $("messages").scrollTop = $("messages").scrollHeight;
  return row;
}

function badge(extension) {
  const span = document.createElement("span");
  span.className = "badge";
  const value = extension.projection[String(extension.layers[0])];
  const parts = [`projection L${extension.layers[0]}: ${value === null ? "n/a" : value.toFixed(3)}`];
  if (extension.cap) {
    const moved = Object.values(extension.cap.engaged_tokens).reduce((a, b) => a + b, 0);
    parts.push(extension.cap.engaged
      ? `cap ${extension.cap.experiment} engaged (${moved} token-layer moves)`
      : `cap ${extension.cap.experiment}: not engaged`);
    if (extension.cap.engaged) span.classList.add("engaged");
  } else {
    parts.push("uncapped");
  }
  if (extension.steer) parts.push(`steer ${extension.steer.coef_frac}`);
  span.textContent = parts.join(" · ");
  return span;
}

// --- charts ----------------------------------------------------------------------------
function thresholdDatasets(xMax) {
  const sets = [];
  const info = state.info;
  const at = String(layer());
  for (const [name, byLayer] of Object.entries(info.thresholds || {})) {
    if (byLayer[at] === undefined) continue;
    sets.push({
      label: `${name} (calibration)`,
      data: [{ x: 0.5, y: byLayer[at] }, { x: xMax + 0.5, y: byLayer[at] }],
      borderColor: THRESHOLD_COLORS[name] || "#999",
      borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0, fill: false, order: 10,
    });
  }
  const experiment = (info.capping.experiments || []).find((e) => e.id === $("cap-experiment").value);
  if (experiment && experiment.tau[at] !== undefined && (capOn() || state.mode === "compare")) {
    sets.push({
      label: `cap floor ${experiment.id}`,
      data: [{ x: 0.5, y: experiment.tau[at] }, { x: xMax + 0.5, y: experiment.tau[at] }],
      borderColor: COLORS.capped, borderWidth: 2, pointRadius: 0, fill: false, order: 9,
    });
  }
  return sets;
}

function renderCharts() {
  const at = String(layer());
  let turns = 0;
  let shown = 0;
  const datasets = [];
  for (const [name, series] of Object.entries(state.series)) {
    const color = COLORS[name] || COLORS.main;
    const kept = series.points.filter((p) => p.projection[at] !== undefined && p.projection[at] !== null);
    turns = Math.max(turns, series.points.length);
    shown += kept.length;
    datasets.push({
      label: series.label,
      data: kept.map((p) => ({ x: p.turn, y: p.projection[at] })),
      borderColor: color,
      backgroundColor: color,
      pointBackgroundColor: kept.map((p) => (p.engaged ? COLORS.capped : color)),
      pointBorderColor: kept.map((p) => (p.engaged ? COLORS.capped : color)),
      pointStyle: kept.map((p) => (p.engaged ? "rectRot" : "circle")),
      pointRadius: 5, tension: 0.15, order: 1,
    });
  }
  turnChart.data.datasets = [...datasets, ...thresholdDatasets(Math.max(turns, 1))];
  turnChart.options.scales.x.max = Math.max(turns, 1) + 0.5;
  turnChart.update();
  turnChart.canvas.dataset.points = String(shown);

  const tokenSets = [];
  let width = 1;
  let labels = [];
  for (const [name, tokens] of Object.entries(state.lastTokens)) {
    const values = tokens.projection[at];
    if (!values) continue;
    width = Math.max(width, values.length);
    if (tokens.text.length > labels.length) labels = tokens.text;
    tokenSets.push({
      label: state.series[name] ? state.series[name].label : name,
      data: values.map((y, i) => ({ x: i + 1, y })),
      borderColor: COLORS[name] || COLORS.main, pointRadius: 2, borderWidth: 1.5, order: 1,
    });
  }
  tokenChart.$labels = labels;
  tokenChart.data.datasets = [...tokenSets, ...thresholdDatasets(width)];
  tokenChart.options.scales.x.max = width + 0.5;
  tokenChart.update();
  tokenChart.canvas.dataset.points = String(tokenSets.reduce((n, s) => n + s.data.length, 0));
  const hidden = Object.values(state.series).some((s) => s.points.some((p) => p.projection[at] === undefined));
  $("chart-note").textContent = hidden
    ? `Points measured at other layers are hidden at layer ${at}.`
    : `Layer ${at}. Dashed: percentiles of per-token projections over the calibration set. Red points: a cap engaged.`;
}

function makeChart(canvas, xTitle, tooltipLabel) {
  return new Chart(canvas, {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      scales: {
        x: { type: "linear", min: 0.5, max: 1.5, title: { display: true, text: xTitle }, ticks: { precision: 0, callback: (v) => (Number.isInteger(v) ? v : "") } },
        y: { title: { display: true, text: "projection on the unit axis" } },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 14 } },
        tooltip: { callbacks: { title: tooltipLabel } },
      },
    },
  });
}

// --- conversation ------------------------------------------------------------------------
function capOn() {
  return $("cap-toggle").checked && $("cap-experiment").value !== "";
}

function resetSeries() {
  state.series = {};
  state.lastTokens = {};
  const names = state.mode === "compare" ? ["capped", "uncapped"] : ["main"];
  for (const name of names) {
    state.series[name] = { label: name === "main" ? "this conversation" : name, history: [], points: [] };
  }
}

function newChat() {
  state.mode = $("compare-toggle").checked ? "compare" : "single";
  const canCap = (state.info.capping.experiments || []).length > 0;
  $("cap-toggle").disabled = !canCap || state.mode === "compare";
  resetSeries();
  $("messages").replaceChildren();
  showError("");
  renderCharts();
}

function optionsFor(name) {
  const options = { layers: [layer()], per_token: true };
  const experiment = $("cap-experiment").value || null;
  if (name === "capped") options.cap = experiment;
  else if (name === "uncapped") options.cap = null;
  else options.cap = capOn() ? experiment : null;
  const steer = Number($("steer").value);
  if (steer) options.steer = steer;
  return options;
}

async function send(text) {
  if (state.busy || !text.trim()) return;
  showError("");
  const system = $("system").value.trim();
  const names = Object.keys(state.series);
  addTurnRow([bubble("user", text)]);
  const row = addTurnRow([]);
  const bubbles = {};
  for (const name of names) {
    bubbles[name] = bubble("assistant", "", name);
    row.append(bubbles[name]);
  }
  setBusy(true, "generating…");
  try {
    for (const name of names) {
      const series = state.series[name];
      const history = [...series.history, { role: "user", content: text }];
      const messages = system && !history.some((m) => m.role === "system")
        ? [{ role: "system", content: system }, ...history] : history;
      const target = bubbles[name].querySelector(".text");
      const { extension } = await streamChat(messages, optionsFor(name), (delta) => {
        target.textContent += delta;
        $("messages").scrollTop = $("messages").scrollHeight;
      });
      bubbles[name].append(badge(extension));
      series.history = [...messages, { role: "assistant", content: target.textContent }];
      series.points.push({
        turn: series.points.length + 1,
        projection: extension.projection,
        engaged: Boolean(extension.cap && extension.cap.engaged),
      });
      if (extension.tokens) state.lastTokens[name] = extension.tokens;
      renderCharts();
    }
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(false);
  }
}

// --- transcript replay -------------------------------------------------------------------
function transcriptsIn(text) {
  try {
    const value = JSON.parse(text);
    const isMessages = Array.isArray(value) && value.length > 0 && value.every((v) => v && v.role);
    return Array.isArray(value) && !isMessages ? value : [value];
  } catch (_e) {
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }
}

async function replay(file) {
  if (state.busy) return;
  showError("");
  let transcripts;
  try {
    transcripts = transcriptsIn(await file.text());
  } catch (_e) {
    showError(`${file.name} is neither JSON nor JSON lines`);
    return;
  }
  setBusy(true, `projecting ${file.name}…`);
  try {
    const result = await api("/personaspace/project", {
      transcript: transcripts[0], layers: [layer()], per_token: true,
    });
    $("compare-toggle").checked = false;
    newChat();
    const series = state.series.main;
    series.label = `${file.name}${transcripts.length > 1 ? ` (1 of ${transcripts.length})` : ""}`;
    let turn = 0;
    for (const message of result.messages) {
      if (message.role === "system") $("system").value = message.content;
      const div = bubble(message.role, message.content, message.role === "assistant" ? "main" : undefined);
      addTurnRow([div]);
      if (message.role !== "assistant") continue;
      series.points.push({ turn: turn + 1, projection: result.turns[turn], engaged: false });
      if (result.tokens) state.lastTokens.main = result.tokens[turn];
      turn += 1;
      renderCharts();
      await new Promise((r) => setTimeout(r, 250)); // replay: one turn at a time
    }
    series.history = result.messages;
    setBusy(false, `replayed ${turn} turns of ${file.name}; you can continue the conversation`);
  } catch (err) {
    showError(err.message);
    setBusy(false);
  }
}

// --- start -------------------------------------------------------------------------------
async function start() {
  try {
    state.info = await api("/personaspace/info");
  } catch (err) {
    $("model-name").textContent = "";
    showError(err.message);
    return;
  }
  const info = state.info;
  $("model-name").textContent = `${info.model} · axis ${info.axis.source}`;
  for (const l of info.axis.layers) $("layer").append(new Option(`${l}`, `${l}`, false, l === info.layers[0]));
  const experiments = info.capping.experiments || [];
  for (const e of experiments) $("cap-experiment").append(new Option(e.id, e.id));
  const preferred = info.capping.default || (experiments.find((e) => e.id.endsWith("-p25")) || {}).id;
  if (preferred) $("cap-experiment").value = preferred;
  $("cap-toggle").checked = Boolean(info.capping.default);
  if (!experiments.length) {
    $("cap-toggle").disabled = true;
    $("compare-toggle").disabled = true;
    $("cap-experiment").append(new Option("no capping config", ""));
  }
  $("max-tokens").max = info.limits.max_tokens;
  $("temperature").value = info.sampling.temperature;
  turnChart = makeChart($("turn-chart"), "assistant turn", (items) => `turn ${items[0].parsed.x}`);
  tokenChart = makeChart($("token-chart"), "reply token", (items) => {
    const label = (tokenChart.$labels || [])[items[0].parsed.x - 1];
    return label === undefined ? "" : `token ${items[0].parsed.x}: ${JSON.stringify(label)}`;
  });
  newChat();
  setBusy(false, info.calibrated ? "" : "uncalibrated axis: no threshold lines");
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("input").value;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("new-chat").addEventListener("click", newChat);
  $("compare-toggle").addEventListener("change", newChat);
  $("cap-toggle").addEventListener("change", renderCharts);
  $("cap-experiment").addEventListener("change", renderCharts);
  $("layer").addEventListener("change", renderCharts);
  $("transcript-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) replay(file);
  });
  $("key-box").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    localStorage.setItem("personaspace-api-key", state.key);
    $("key-box").hidden = true;
    showError("");
    if (!state.info) start();
  });
  start();
});
