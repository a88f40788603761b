// The playground: a form that creates videos through the Videos API, live progress and
// previews from the SSE endpoint, the result in a <video>, and the recent videos (open,
// delete). Plain JS.
//
// Every request carries the API key when one is entered (`Authorization: Bearer`), so the
// progress stream is read with fetch (EventSource cannot send headers) and media are fetched
// as blobs for the <video> and <img> elements.
"use strict";

const TASK_LABELS = {
  unconditional: "Unconditional video",
  text_to_video: "Text → video",
  text_to_image: "Text → image",
  image_to_video: "Image → video",
  continuation: "Continue a video",
  inpaint: "Inpaint a video",
  outpaint: "Outpaint a video",
  stylize: "Stylize a video",
  audio_to_video: "Audio → video",
  video_to_audio: "Video → audio (soundtrack)",
  av_continuation: "Continue video and sound",
};
const TASK_HELP = {
  unconditional: "A clip from nothing: no prompt.",
  text_to_video: "A clip from the prompt.",
  text_to_image: "A still image from the prompt.",
  image_to_video: "The image becomes the first frame; the prompt is optional.",
  continuation: "Frames after the end of the video; seconds is the length of the new part.",
  inpaint: "Regenerates the inside of the mask box.",
  outpaint: "Keeps the inside of the mask box and generates the rest.",
  stylize: "The video's motion and depth with the look the prompt describes.",
  audio_to_video: "A clip that goes with the sound.",
  video_to_audio: "The input video with a new soundtrack.",
  av_continuation: "Continues picture and sound together (the clip's own track, or an audio file).",
};
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const STOPPED = new Set(["failed", "cancelled"]);
// Tasks without the "add a soundtrack" option: their output has sound already, or is a still.
const NO_SOUNDTRACK_OPTION = new Set(["video_to_audio", "av_continuation", "text_to_image"]);
const LIST_LIMIT = 12;
const LIST_REFRESH_MS = 3000;
const HEALTH_REFRESH_MS = 10000;
// Wait before reconnecting a dropped progress stream (the server's `retry:` overrides it).
const EVENTS_RETRY_MS = 1000;
const KEY_STORAGE = "videopoet.apiKey";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const state = {
  config: null, tasks: {}, current: null, events: null, listTimer: null, objectUrls: new Map(),
  status: null, // the status of the video shown
  preview: null, // the preview event shown in the player, until the result replaces it
  // the latest preview asked for: a slower earlier fetch must not replace a later one
  previewSeq: 0,
};

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

// --- the form ----------------------------------------------------------------------------
function inputsOf(taskName) {
  const task = state.tasks[taskName];
  return new Set([...task.required, ...task.optional]);
}

function showTaskFields() {
  const name = $("task").value;
  const task = state.tasks[name];
  const inputs = inputsOf(name);
  for (const field of document.querySelectorAll("[data-input]")) {
    const key = field.dataset.input;
    let shown;
    if (key === "seconds") shown = !task.image_output;
    else if (key === "with_audio") shown = !NO_SOUNDTRACK_OPTION.has(name);
    else shown = inputs.has(key);
    field.hidden = !shown;
    const control = field.querySelector("input, textarea");
    if (control && key !== "with_audio") control.required = task.required.includes(key);
  }
  const extension = name === "continuation" || name === "av_continuation";
  $("seconds-label").textContent = extension ? "Seconds of new video" : "Seconds";
  $("seconds").placeholder = extension ? "1" : String(state.config.clip_seconds);
  $("seconds").max = task.extendable ? String(state.config.max_seconds) : "";
  const needs = task.required.filter((i) => i !== "prompt");
  $("task-help").textContent =
    TASK_HELP[name] + (needs.length ? ` Needs: ${needs.join(", ")}.` : "");
}

function buildForm() {
  const form = new FormData();
  const name = $("task").value;
  const inputs = inputsOf(name);
  form.append("task", name);
  const prompt = $("prompt").value.trim();
  if (inputs.has("prompt") && prompt) form.append("prompt", prompt);
  for (const kind of ["image", "video", "audio"]) {
    const file = $(kind).files[0];
    if (inputs.has(kind) && file) form.append(kind, file);
  }
  const box = $("mask-box").value.trim();
  if (inputs.has("mask_box") && box) form.append("mask_box", box);
  if (!state.tasks[name].image_output && $("seconds").value) {
    form.append("seconds", $("seconds").value);
  }
  for (const id of ["seed", "size", "temperature", "top-k", "guidance"]) {
    const control = $(id);
    if (control.value !== "") form.append(control.name, control.value);
  }
  if (!NO_SOUNDTRACK_OPTION.has(name) && $("with-audio").checked) form.append("with_audio", "true");
  // Previews of the frames made so far, shown while the rest is sampled (`preview` events).
  form.append("preview", "true");
  return form;
}

function missingInputs() {
  const name = $("task").value;
  return state.tasks[name].required.filter((key) => {
    if (key === "prompt") return !$("prompt").value.trim();
    if (key === "mask_box") return false;
    // av_continuation may take its audio from the clip's own soundtrack.
    if (key === "audio" && name === "av_continuation") return false;
    return !$(key).files[0];
  });
}

async function submit(event) {
  event.preventDefault();
  const error = $("form-error");
  error.hidden = true;
  const missing = missingInputs();
  if (missing.length) {
    error.textContent = `${TASK_LABELS[$("task").value]} needs: ${missing.join(", ")}.`;
    error.hidden = false;
    return;
  }
  $("submit").disabled = true;
  try {
    const video = await api("/v1/videos", { method: "POST", body: buildForm() });
    openVideo(video);
    refreshList();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    $("submit").disabled = false;
  }
}

// --- one video: progress, then the result ------------------------------------------------
function openVideo(video) {
  closeEvents();
  state.current = video.id;
  $("result-empty").hidden = true;
  $("result-body").hidden = false;
  $("job-id").textContent = video.id;
  $("job-task").textContent = `${TASK_LABELS[video.task] || video.task} · ${video.size} · ` +
    `${video.seconds} s · seed ${video.seed}`;
  $("media").hidden = true;
  state.shown = null;
  state.previewSeq += 1;
  showingPreview(null);
  $("player").removeAttribute("src");
  $("player").load();
  render(video);
  if (!FINISHED.has(video.status)) followEvents(video.id);
}

function render(video) {
  if (video.id !== state.current) return;
  state.status = video.status;
  if (state.preview && STOPPED.has(video.status)) showingPreview(state.preview);
  $("progress").value = video.progress;
  $("progress-text").textContent = `${video.progress}%`;
  const status = $("status");
  status.textContent = video.status.replace("_", " ");
  status.dataset.status = video.status;
  $("stage").textContent = video.stage ? `· ${video.stage}` : "";
  $("cancel").hidden = FINISHED.has(video.status);
  const error = $("job-error");
  error.hidden = !video.error;
  if (video.error) error.textContent = `${video.error.code}: ${video.error.message}`;
  if (video.status === "completed") showMedia(video);
  updateListItem(video);
}

// A blob URL of one variant of a video's content (fetched with the key), kept per slot and
// revoked when the slot gets another.
async function contentUrl(slot, id, variant) {
  const response = await fetch(`/v1/videos/${id}/content?variant=${variant}`,
    { headers: authHeaders() });
  if (!response.ok) throw new Error(`${variant}: ${response.status} ${response.statusText}`);
  const url = URL.createObjectURL(await response.blob());
  const old = state.objectUrls.get(slot);
  if (old) URL.revokeObjectURL(old);
  state.objectUrls.set(slot, url);
  return url;
}

async function showMedia(video) {
  if (state.shown === video.id) return;
  state.shown = video.id;
  state.previewSeq += 1; // a preview still on its way is not shown over the result
  const still = video.task === "text_to_image";
  // slot (element id), variant, file extension
  const files = [["player", "video", "mp4"], ["download-thumbnail", "thumbnail", "webp"],
    ["download-spritesheet", "spritesheet", "jpg"]];
  if (still) files.push(["still", "image", "png"]);
  try {
    const urls = {};
    for (const [slot, variant] of files) urls[slot] = await contentUrl(slot, video.id, variant);
    if (video.id !== state.current) return;
    const player = $("player");
    player.src = urls.player;
    player.play().catch(() => { /* autoplay refused: the controls are there */ });
    showingPreview(null);
    $("still").hidden = !still;
    $("download-image").hidden = !still;
    const links = [["download-video", "player", "mp4"], ["download-thumbnail", null, "webp"],
      ["download-spritesheet", null, "jpg"]];
    if (still) {
      $("still").src = urls.still;
      links.push(["download-image", "still", "png"]);
    }
    for (const [id, slot, ext] of links) {
      $(id).href = urls[slot || id];
      $(id).download = `${video.id}.${ext}`;
    }
    $("media").hidden = false;
  } catch (e) {
    state.shown = null;
    $("job-error").textContent = `Could not load the result: ${e.message}`;
    $("job-error").hidden = false;
  }
}

// A `preview` event: the mp4 of the frames made so far, in the player until the result comes.
// It is replaced under the same URL, so each is fetched anew (a query of its own, no cache).
async function showPreview(preview) {
  const seq = ++state.previewSeq;
  if (preview.id !== state.current || state.shown === preview.id) return;
  try {
    const response = await fetch(`${preview.url}&frame=${preview.frame_index}`,
      { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) return; // gone meanwhile (finished, deleted): the next event says which
    const blob = await response.blob();
    if (seq !== state.previewSeq || preview.id !== state.current) return;
    const url = URL.createObjectURL(blob);
    const old = state.objectUrls.get("preview");
    if (old) URL.revokeObjectURL(old);
    state.objectUrls.set("preview", url);
    const player = $("player");
    player.src = url;
    player.play().catch(() => { /* autoplay refused: the controls are there */ });
    $("still").hidden = true;
    showingPreview(preview);
    $("media").hidden = false;
  } catch (e) {
    /* a preview is a courtesy: the result still comes */
  }
}

// Mark the player as showing a preview (the frames so far), or the result (null).
function showingPreview(preview) {
  const note = $("preview-note");
  note.hidden = !preview;
  $("links").hidden = Boolean(preview);
  if (preview) {
    state.preview = preview;
    const frames = preview.frames === 1 ? "1 frame" : `${preview.frames} frames`;
    note.textContent = STOPPED.has(state.status)
      ? `Preview: the ${frames} made before it stopped`
      : `Preview: the first ${frames}, while the rest is made`;
    $("media").dataset.preview = String(preview.frame_index);
  } else {
    state.preview = null;
    delete $("media").dataset.preview;
  }
}

// Server-sent events read with fetch: the video object at each change of status, progress or
// stage, and a `preview` before it at each new preview. A dropped stream is resumed with
// Last-Event-ID; 204 means the video had ended.
async function followEvents(id) {
  const controller = new AbortController();
  state.events = controller;
  let lastId = null;
  let retryMs = EVENTS_RETRY_MS;
  while (!controller.signal.aborted) {
    let ended = false;
    try {
      const headers = authHeaders();
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(`/v1/videos/${id}/events`,
        { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 204) return;
      if (!response.ok) {
        const error = new Error(`progress: ${response.status} ${response.statusText}`);
        error.fatal = response.status >= 400 && response.status < 500;
        throw error;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event.retry) retryMs = event.retry;
          if (event.id !== undefined) lastId = event.id;
          if (event.data === undefined) continue;
          if (event.name === "deleted") {
            clearResult();
            return;
          }
          if (event.name === "preview") showPreview(JSON.parse(event.data));
          if (event.name === "video") {
            const video = JSON.parse(event.data);
            render(video);
            ended = FINISHED.has(video.status);
          }
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      if (e.fatal) {
        $("job-error").textContent = e.message;
        $("job-error").hidden = false;
        return;
      }
    }
    if (ended) {
      if (state.events === controller) state.events = null;
      refreshList();
      return;
    }
    await sleep(retryMs);
  }
}

function parseEvent(block) {
  const event = { name: "message" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.name = value;
    else if (field === "data") event.data = event.data === undefined ? value : `${event.data}\n${value}`;
    else if (field === "id") event.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
  }
  return event;
}

function closeEvents() {
  if (state.events) state.events.abort();
  state.events = null;
}

function clearResult() {
  closeEvents();
  state.current = null;
  state.shown = null;
  state.previewSeq += 1;
  showingPreview(null);
  $("player").removeAttribute("src");
  $("player").load();
  $("result-body").hidden = true;
  $("result-empty").hidden = false;
}

async function cancelCurrent() {
  if (!state.current) return;
  try {
    render(await api(`/v1/videos/${state.current}/cancel`, { method: "POST" }));
  } catch (e) {
    $("job-error").textContent = e.message;
    $("job-error").hidden = false;
  }
}

// --- recent videos ------------------------------------------------------------------------
function ago(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function listItem(video) {
  const item = document.createElement("li");
  item.className = "job";
  item.dataset.id = video.id;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "open";
  open.title = "Open";
  const thumb = document.createElement("span");
  thumb.className = "thumb";
  open.append(thumb);
  const text = document.createElement("span");
  text.className = "job-text";
  const title = document.createElement("span");
  title.className = "job-title";
  const meta = document.createElement("span");
  meta.className = "job-meta muted";
  text.append(title, meta);
  open.append(text);
  open.addEventListener("click", () => openVideo(item.video));
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete secondary";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${video.id}`);
  remove.addEventListener("click", () => deleteVideo(video.id));
  item.append(open, remove);
  fillListItem(item, video);
  return item;
}

function fillListItem(item, video) {
  item.video = video;
  const thumb = item.querySelector(".thumb");
  if (video.status === "completed" && !thumb.querySelector("img")) {
    const img = document.createElement("img");
    img.alt = "";
    thumb.replaceChildren(img);
    contentUrl(`thumb:${video.id}`, video.id, "thumbnail")
      .then((url) => { img.src = url; })
      .catch(() => img.remove());
  }
  item.querySelector(".job-title").textContent =
    video.prompt || TASK_LABELS[video.task] || video.task;
  const status = video.status === "in_progress" ? `${video.progress}%` : video.status;
  item.querySelector(".job-meta").textContent =
    `${status} · ${ago(video.created_at)} · ${video.task}`;
  item.dataset.status = video.status;
}

function updateListItem(video) {
  const item = document.querySelector(`#jobs li[data-id="${video.id}"]`);
  if (item) fillListItem(item, video);
}

async function refreshList() {
  clearTimeout(state.listTimer);
  try {
    const page = await api(`/v1/videos?limit=${LIST_LIMIT}`);
    const list = $("jobs");
    const keep = new Map([...list.children].map((li) => [li.dataset.id, li]));
    list.replaceChildren(...page.data.map((video) => {
      const item = keep.get(video.id);
      if (!item) return listItem(video);
      fillListItem(item, video);
      return item;
    }));
    $("jobs-empty").hidden = page.data.length > 0;
    if (page.data.some((video) => !FINISHED.has(video.status))) {
      state.listTimer = setTimeout(refreshList, LIST_REFRESH_MS);
    }
  } catch (e) {
    $("jobs-empty").textContent = e.status === 401
      ? "This server needs an API key: enter it at the top."
      : `Could not list videos: ${e.message}`;
    $("jobs-empty").hidden = false;
    if (e.status === 401) $("api-key").focus();
  }
}

async function deleteVideo(id) {
  try {
    await api(`/v1/videos/${id}`, { method: "DELETE" });
  } catch (e) {
    if (e.status !== 404) {
      window.alert(`Could not delete ${id}: ${e.message}`);
      return;
    }
  }
  const thumb = state.objectUrls.get(`thumb:${id}`);
  if (thumb) URL.revokeObjectURL(thumb);
  state.objectUrls.delete(`thumb:${id}`);
  if (state.current === id) clearResult();
  refreshList();
}

// --- the served model and its health -----------------------------------------------------
async function refreshHealth() {
  const pill = $("health");
  try {
    const response = await fetch("/readyz");
    const report = await response.json();
    pill.dataset.state = report.status;
    pill.textContent = report.status === "ready"
      ? `ready · ${report.workers} worker${report.workers === 1 ? "" : "s"} · ` +
        `${report.queue_depth} queued`
      : report.reason || report.status;
  } catch (e) {
    pill.dataset.state = "unavailable";
    pill.textContent = "the API does not answer";
  }
}

async function start() {
  try {
    state.config = await api("/playground/config.json");
  } catch (e) {
    $("model").textContent = `Could not load the model card: ${e.message}`;
    return;
  }
  const config = state.config;
  $("model").textContent = `model ${config.model} · ${config.sizes.join(" or ")} · ` +
    `${config.fps} fps · clips of ${config.clip_seconds} s`;
  // the sizes the model serves, largest (its default) first; previews stay at the smallest
  const sizes = $("size");
  for (const size of [...config.sizes].reverse()) sizes.add(new Option(size, size));
  sizes.value = config.size;
  // left empty, the guidance is the model's own: show it as the field's placeholder
  $("guidance").placeholder = String(config.guidance_scale);
  const select = $("task");
  for (const task of config.tasks) {
    state.tasks[task.name] = task;
    select.add(new Option(TASK_LABELS[task.name] || task.name, task.name));
  }
  select.value = "text_to_video";
  select.addEventListener("change", showTaskFields);
  showTaskFields();
  $("create-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancelCurrent);
  $("refresh").addEventListener("click", refreshList);
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    refreshList();
  });
  $("key-form").addEventListener("submit", (event) => event.preventDefault());
  refreshHealth();
  setInterval(refreshHealth, HEALTH_REFRESH_MS);
  await refreshList();
  document.body.dataset.ready = "true";
}

start();
