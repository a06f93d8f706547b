// raydiant's page: plain JavaScript, no build step. Creates and cancels tasks through the
// DashScope door, reads them through /web/api, lists models through /v1/models. Every text
// from the server is set with textContent (a prompt is data, never markup).
"use strict";

const KEY = "raydiant.apiKey";
const POLL_MS = 500;
const state = { models: {}, live: new Map() };  // live: task id -> its card, followed until it ends
const $ = (selector, root = document) => root.querySelector(selector);

function apiKey() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${apiKey()}`, ...(options.headers || {}) };
  const answer = await fetch(path, { ...options, headers });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const message = body.message || (body.error && body.error.message) || answer.statusText;
    throw new Error(`${answer.status}: ${message}`);
  }
  return body;
}

// --- the key ---------------------------------------------------------------------------------

async function useKey(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#api-key").value.trim());
  await start();
}

async function start() {
  try {
    await loadModels();
  } catch (error) {
    sessionStorage.removeItem(KEY);
    $("#key-error").textContent = `That key did not work (${error.message}).`;
    return;
  }
  $("#key-error").textContent = "";
  $("#key-form").hidden = true;
  $("#app").hidden = false;
  $("#forget-key").hidden = false;
  await refreshTasks();
}

function forgetKey() {
  sessionStorage.removeItem(KEY);
  location.reload();
}

// --- the form, built from the served models ----------------------------------------------------

async function loadModels() {
  const list = await api("/v1/models");
  const select = $("#model");
  select.replaceChildren();
  for (const card of list.data.filter((c) => !c.edit)) {
    state.models[card.id] = card;
    select.append(new Option(card.alias_of ? `${card.id} (${card.alias_of})` : card.id, card.id));
  }
  fillModelOptions();
}

function fillModelOptions() {
  const card = state.models[$("#model").value];
  if (!card) return;
  const sizes = card.sizes || [card.default_size];
  $("#size").replaceChildren(...sizes.map((s) => new Option(s, s.replace("x", "*"), false, s === card.default_size)));
  $("#n").replaceChildren(...Array.from({ length: card.max_n }, (_, i) => new Option(String(i + 1), String(i + 1))));
  Object.assign($("#steps"), { min: card.min_steps, max: card.max_steps, value: card.default_steps });
  Object.assign($("#guidance"), { min: card.min_guidance, max: card.max_guidance, value: card.default_guidance });
  fillLoraRows(card);
  $("#quality-label").hidden = !card.fast;  // a model without a step cache renders every request lossless
  $("#quality").value = "lossless";
}

// One row per adapter the model takes: its path and its scale.
function fillLoraRows(card) {
  const rows = Array.from({ length: card.max_loras || 0 }, (_, i) => {
    const row = document.createElement("div");
    row.className = "row lora";
    const path = Object.assign(document.createElement("input"), { className: "lora-path", placeholder: `adapter ${i + 1}` });
    const scale = Object.assign(document.createElement("input"), {
      className: "lora-scale", type: "number", step: "0.05", value: "1",
      min: -card.max_lora_scale, max: card.max_lora_scale });
    const pathLabel = document.createElement("label");
    pathLabel.append("Path ", path);
    const scaleLabel = document.createElement("label");
    scaleLabel.append("Scale ", scale);
    row.append(pathLabel, scaleLabel);
    return row;
  });
  const legend = $("#loras legend");
  $("#loras").replaceChildren(legend, ...rows);
  $("#loras").hidden = rows.length === 0;
}

function chosenLoras() {
  return Array.from(document.querySelectorAll("#loras .lora"))
    .map((row) => ({ path: $(".lora-path", row).value.trim(), scale: Number($(".lora-scale", row).value) }))
    .filter((lora) => lora.path);
}

async function submit(event) {
  event.preventDefault();
  const card = state.models[$("#model").value];
  const parameters = { size: $("#size").value, n: Number($("#n").value), steps: Number($("#steps").value) };
  parameters[card.guidance_name] = Number($("#guidance").value);
  if ($("#seed").value !== "") parameters.seed = Number($("#seed").value);
  const loras = chosenLoras();
  if (loras.length) parameters.loras = loras;
  if (card.fast && $("#quality").value === "fast") parameters.quality = "fast";
  const input = { prompt: $("#prompt").value };
  if ($("#negative-prompt").value.trim()) input.negative_prompt = $("#negative-prompt").value;
  if (state.image) {  // image to image, or an inpaint where the mask is painted
    input.image_url = state.image;
    parameters.strength = Number($("#strength").value);
    const mask = maskDataUrl();
    if (mask) input.mask_image_url = mask;
  }
  parameters.partial_images = 3;  // previews while it renders: the card shows the image forming
  const format = $("#output-format").value;
  if (format !== "png") {
    parameters.output_format = format;
    parameters.output_quality = Number($("#output-quality").value);
  }
  $("#form-error").textContent = "";
  $("#submit").disabled = true;
  try {
    const created = await api("/api/v1/services/aigc/text2image/image-synthesis", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-DashScope-Async": "enable" },
      body: JSON.stringify({ model: card.id, input, parameters }),
    });
    const view = await api(`/web/api/tasks/${created.output.task_id}`);
    show(view, true);
  } catch (error) {
    $("#form-error").textContent = error.message;
  } finally {
    $("#submit").disabled = false;
  }
}

// --- an input image and its mask ----------------------------------------------------------------
// The image is sent as a data: URL; the mask is painted on a canvas over it (white where the
// model repaints, black elsewhere, at the image's own size), or uploaded (white repaints).

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("that file is not an image this browser reads"));
    image.src = url;
  });
}

async function chooseImage() {
  const file = $("#init-image").files[0];
  state.image = null;
  state.painted = false;
  $("#canvas-box").hidden = true;
  if (!file) return;
  state.image = await readAsDataUrl(file);
  const image = await loadImage(state.image);
  for (const canvas of [$("#init-canvas"), $("#mask-canvas")]) Object.assign(canvas, { width: image.naturalWidth, height: image.naturalHeight });
  $("#init-canvas").getContext("2d").drawImage(image, 0, 0);
  clearMask();
  $("#canvas-box").hidden = false;
}

function clearMask() {
  const mask = $("#mask-canvas").getContext("2d");
  mask.clearRect(0, 0, mask.canvas.width, mask.canvas.height);
  state.painted = false;
  $("#mask-file").value = "";
}

async function chooseMask() {
  const file = $("#mask-file").files[0];
  if (!file || !state.image) return;
  const image = await loadImage(await readAsDataUrl(file));
  const mask = $("#mask-canvas").getContext("2d");
  mask.clearRect(0, 0, mask.canvas.width, mask.canvas.height);
  // Shown over the image as painted strokes: white repaints (the uploaded mask's convention).
  const scratch = Object.assign(document.createElement("canvas"), { width: mask.canvas.width, height: mask.canvas.height });
  const context = scratch.getContext("2d");
  context.drawImage(image, 0, 0, scratch.width, scratch.height);
  const pixels = context.getImageData(0, 0, scratch.width, scratch.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const white = pixels.data[i] + pixels.data[i + 1] + pixels.data[i + 2] >= 3 * 128;
    pixels.data.set(white ? [255, 255, 255, 160] : [0, 0, 0, 0], i);
  }
  mask.putImageData(pixels, 0, 0);
  state.painted = true;
}

function paint(event) {
  if (!(event.buttons & 1) || !state.image) return;
  const canvas = $("#mask-canvas");
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  const context = canvas.getContext("2d");
  context.fillStyle = "rgba(255, 255, 255, 0.63)";
  context.beginPath();
  context.arc((event.clientX - box.left) * scale, (event.clientY - box.top) * scale, 24 * scale, 0, 2 * Math.PI);
  context.fill();
  state.painted = true;
}

// The painted strokes as the mask the API takes: white where painted, black elsewhere.
function maskDataUrl() {
  if (!state.painted) return null;
  const painted = $("#mask-canvas");
  const mask = Object.assign(document.createElement("canvas"), { width: painted.width, height: painted.height });
  const context = mask.getContext("2d");
  const strokes = painted.getContext("2d").getImageData(0, 0, painted.width, painted.height);
  const out = context.createImageData(painted.width, painted.height);
  for (let i = 0; i < strokes.data.length; i += 4) {
    const value = strokes.data[i + 3] > 0 ? 255 : 0;
    out.data.set([value, value, value, 255], i);
  }
  context.putImageData(out, 0, 0);
  return mask.toDataURL("image/png");
}

// --- task cards ------------------------------------------------------------------------------

const LIVE = new Set(["PENDING", "RUNNING"]);

function show(view, newest = false) {
  let card = document.getElementById(`task-${view.task_id}`);
  if (!card) {
    card = $("#task-template").content.firstElementChild.cloneNode(true);
    card.id = `task-${view.task_id}`;
    card.dataset.taskId = view.task_id;
    $(".cancel", card).addEventListener("click", () => cancel(view.task_id));
    $(".copy", card).addEventListener("click", () => copyAsCode(card));
    const list = $("#tasks");
    newest ? list.prepend(card) : list.append(card);
  }
  card.view = view;
  render(card, view);
  if (LIVE.has(view.status) && !state.live.has(view.task_id)) {
    state.live.set(view.task_id, card);
    follow(view.task_id);
  }
}

// A live card follows its task's event stream (Server-Sent Events, read with fetch: the key goes
// in a header, which EventSource cannot send): `task`, its view whenever it changes, and
// `preview`, each picture of the image forming as the render makes it. Polled if the stream fails.
async function follow(taskId) {
  const card = state.live.get(taskId);
  try {
    const answer = await fetch(`/web/api/tasks/${taskId}/events`, { headers: { Authorization: `Bearer ${apiKey()}` } });
    if (!answer.ok || !answer.body) throw new Error(`${answer.status}`);
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const data = buffer.slice(0, end).split("\n").filter((line) => line.startsWith("data: "));
        buffer = buffer.slice(end + 2);
        if (data.length) receive(card, JSON.parse(data.map((line) => line.slice(6)).join("\n")));
      }
    }
  } catch (error) {
    console.warn(`task ${taskId}: no event stream (${error.message}); polling`);
  }
  if (LIVE.has(card.view.status)) setTimeout(() => poll(taskId), POLL_MS);
  else state.live.delete(taskId);
}

function receive(card, event) {
  if (event.type === "task") {
    card.view = event.task;
    render(card, event.task);
  } else if (event.type === "preview") {
    card.streamedPreview = event.data_url;
    render(card, card.view);
  }
}

function render(card, view) {
  card.dataset.status = view.status;
  $(".status", card).textContent = view.status;
  $(".model", card).textContent = view.model;
  $(".when", card).textContent = new Date(view.submit_time * 1000).toLocaleTimeString();
  $(".prompt", card).textContent = view.prompt;
  const negative = view.negative_prompt ? ` · not: ${view.negative_prompt}` : "";
  const loras = (view.loras || []).map((lora) => ` · LoRA ${lora.path} × ${lora.scale}`).join("");
  const quality = view.quality === "fast" ? " · fast" : "";
  const mode = { image: ` · from an image, strength ${view.strength}`, inpaint: ` · repainted where masked, strength ${view.strength}` }[view.mode] || "";
  const format = view.output_format && view.output_format !== "png" ? ` · ${view.output_format.toUpperCase()}` : "";
  $(".params", card).textContent =
    `${view.size} · n ${view.n} · seed ${view.seed} · ${view.steps} steps · guidance ${view.guidance}${negative}${loras}${quality}${mode}${format}`;
  const live = LIVE.has(view.status);
  $(".live", card).hidden = !live;
  $(".cancel", card).hidden = !live;
  $(".queue", card).textContent = view.queue_position ? `#${view.queue_position} in queue` : "";
  const progress = view.progress;
  $(".bar", card).max = progress ? progress.steps : 1;
  $(".bar", card).value = progress ? progress.step : 0;
  $(".steps", card).textContent = progress && live ? `step ${progress.step} of ${progress.steps}` : "";
  $(".eta", card).textContent = progress && live ? `about ${view.eta_s.toFixed(1)} s left` : "";
  const preview = $(".preview", card);
  const picture = card.streamedPreview || view.preview_url;  // streamed, or the latest kept one
  preview.hidden = !(live && picture);
  if (live && picture && preview.getAttribute("src") !== picture) preview.src = picture;
  $(".task-error", card).textContent = view.status === "FAILED" ? view.error || "failed" : "";
  const images = $(".images", card);
  if (images.childElementCount !== view.images.length) {
    images.replaceChildren(...view.images.map(figure));
  }
}

function figure(image) {
  const item = document.createElement("figure");
  if (image.url) {
    const link = Object.assign(document.createElement("a"), { href: image.url, target: "_blank", rel: "noopener" });
    link.append(Object.assign(document.createElement("img"), { src: image.url, alt: `seed ${image.seed}`, loading: "lazy" }));
    item.append(link);
  }
  const caption = document.createElement("figcaption");
  caption.textContent = image.url ? `seed ${image.seed}` : `seed ${image.seed}: ${image.error}`;
  item.append(caption);
  return item;
}

async function poll(taskId) {
  const card = state.live.get(taskId);
  try {
    const view = await api(`/web/api/tasks/${taskId}`);
    card.view = view;
    render(card, view);
    if (!LIVE.has(view.status)) {
      state.live.delete(taskId);
      return;
    }
  } catch (error) {
    $(".task-error", card).textContent = error.message;  // e.g. 429: keep polling, more slowly
  }
  setTimeout(() => poll(taskId), POLL_MS);
}

async function cancel(taskId) {
  const card = document.getElementById(`task-${taskId}`);
  try {
    await api(`/api/v1/tasks/${taskId}/cancel`, { method: "POST" });
    render(card, await api(`/web/api/tasks/${taskId}`));
  } catch (error) {
    $(".task-error", card).textContent = error.message;
  }
}

async function refreshTasks() {
  const page = await api("/web/api/tasks");
  for (const view of page.tasks) show(view);
}

// --- copy as code ------------------------------------------------------------------------------

function copyAsCode(card) {
  const code = snippet($(".code-kind", card).value, card.view);
  const pre = $(".code", card);
  pre.textContent = code;
  pre.hidden = false;
  if (navigator.clipboard) navigator.clipboard.writeText(code).catch(() => {});  // shown either way
}

function snippet(kind, view) {
  const base = location.origin;
  const card = state.models[view.model] || { guidance_name: "guidance" };
  const parameters = { size: view.size, n: view.n, seed: view.seed, steps: view.steps, [card.guidance_name]: view.guidance };
  const loras = (view.loras || []).map((lora) => ({ path: lora.path, scale: lora.scale }));
  if (loras.length) parameters.loras = loras;
  if (view.quality === "fast") parameters.quality = "fast";
  const input = { prompt: view.prompt };
  if (view.negative_prompt) input.negative_prompt = view.negative_prompt;
  const py = (value) => JSON.stringify(value);
  if (kind === "curl") {
    const body = JSON.stringify({ model: view.model, input, parameters });
    return [
      `curl -X POST '${base}/api/v1/services/aigc/text2image/image-synthesis' \\`,
      `  -H "Authorization: Bearer $RAYDIANT_API_KEY" -H 'Content-Type: application/json' \\`,
      `  -H 'X-DashScope-Async: enable' \\`,
      `  -d '${body.replaceAll("'", "'\\''")}'`,
    ].join("\n");
  }
  if (kind === "dashscope") {
    const extra = Object.entries(parameters).filter(([k]) => !["size", "n"].includes(k))
      .map(([k, v]) => `, ${k}=${py(v)}`).join("");
    const negative = view.negative_prompt ? `, negative_prompt=${py(view.negative_prompt)}` : "";
    return [
      "import os, dashscope",
      "from dashscope import ImageSynthesis",
      `dashscope.base_http_api_url = ${py(base + "/api/v1")}`,
      `rsp = ImageSynthesis.call(api_key=os.environ["RAYDIANT_API_KEY"], model=${py(view.model)},`,
      `                          prompt=${py(view.prompt)}${negative}, size=${py(view.size)}, n=${view.n}${extra})`,
      "print([r.url for r in rsp.output.results])",
    ].join("\n");
  }
  const extraBody = { seed: view.seed, steps: view.steps, guidance: view.guidance };
  if (view.negative_prompt) extraBody.negative_prompt = view.negative_prompt;
  if (loras.length) extraBody.loras = loras;
  if (view.quality === "fast") extraBody.quality = "fast";
  return [
    "import os",
    "from openai import OpenAI",
    `client = OpenAI(api_key=os.environ["RAYDIANT_API_KEY"], base_url=${py(base + "/v1")})`,
    `answer = client.images.generate(model=${py(view.model)}, prompt=${py(view.prompt)},`,
    `                                size=${py(view.size.replace("*", "x"))}, n=${view.n},`,
    `                                extra_body=${py(extraBody)})`,
    "print([image.url for image in answer.data])",
  ].join("\n");
}

// --- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#key-form").addEventListener("submit", useKey);
  $("#render-form").addEventListener("submit", submit);
  $("#model").addEventListener("change", fillModelOptions);
  $("#forget-key").addEventListener("click", forgetKey);
  $("#init-image").addEventListener("change", () => chooseImage().catch((error) => { $("#form-error").textContent = error.message; }));
  $("#mask-file").addEventListener("change", () => chooseMask().catch((error) => { $("#form-error").textContent = error.message; }));
  $("#clear-mask").addEventListener("click", clearMask);
  $("#mask-canvas").addEventListener("pointermove", paint);
  $("#mask-canvas").addEventListener("pointerdown", paint);
  $("#output-format").addEventListener("change", () => { $("#output-quality-label").hidden = $("#output-format").value === "png"; });
  if (apiKey()) start();
});
