// The assistant page: record (MediaRecorder) or upload audio, send it to /v1/assistant, show the result.
"use strict";

const $ = (id) => document.getElementById(id);
const TARGET_RATE = 16000;
let needsKey = false;
let recorder = null;
let chunks = [];

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("record").disabled = busy && !recorder;
  document.body.setAttribute("aria-busy", busy ? "true" : "false");
}

function headers() {
  const key = $("api-key").value.trim();
  return needsKey && key ? { "X-API-Key": key } : {};
}

// Decode whatever the browser recorded (webm/ogg opus) and re-encode it as 16 kHz mono 16-bit WAV,
// a format every speechlm server reads.
async function toWav(blob) {
  const ctx = new AudioContext();
  const decoded = await ctx.decodeAudioData(await blob.arrayBuffer());
  await ctx.close();
  const frames = Math.max(1, Math.ceil(decoded.duration * TARGET_RATE));
  const offline = new OfflineAudioContext(1, frames, TARGET_RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, TARGET_RATE, true); view.setUint32(28, TARGET_RATE * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new Blob([view], { type: "audio/wav" });
}

async function send(blob, filename) {
  showError("");
  setBusy(true);
  $("timing").textContent = "Working…";
  const body = new FormData();
  body.append("file", blob, filename);
  const started = performance.now();
  try {
    const response = await fetch("/v1/assistant", { method: "POST", body, headers: headers() });
    const data = await response.json().catch(() => ({ error: `the server answered ${response.status} without JSON` }));
    if (!response.ok) {
      const wait = response.headers.get("Retry-After");
      throw new Error((data.error || `request failed (${response.status})`) + (wait ? ` Try again in ${wait} s.` : ""));
    }
    show(data, performance.now() - started);
  } catch (err) {
    showError(err.message || String(err));
    $("timing").textContent = "";
  } finally {
    setBusy(false);
  }
}

function show(data, ms) {
  const put = (id, value) => { $(id).textContent = value; $(id).classList.toggle("muted", !value); };
  put("transcript", data.transcript || "(nothing recognised)");
  const confidence = data.confidence == null ? "" : ` (${Math.round(100 * data.confidence)} %)`;
  put("intent", data.intent ? `${data.intent}${confidence}` : "—");
  put("reply", data.reply);
  const audio = $("reply-audio");
  if (data.reply_audio) {
    audio.src = "data:audio/wav;base64," + data.reply_audio;
    audio.hidden = false;
    audio.play().catch(() => {});  // autoplay may be blocked; the controls stay usable
  } else {
    audio.hidden = true;
  }
  $("timing").textContent = `Answered in ${Math.round(ms)} ms.`;
}

async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  showError("");
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("This browser cannot record audio here (recording needs https or localhost); upload a file instead.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError(`Microphone unavailable: ${err.message || err.name}`);
    return;
  }
  chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    const recorded = new Blob(chunks, { type: recorder.mimeType });
    recorder = null;
    button.textContent = "Start recording";
    button.setAttribute("aria-pressed", "false");
    try {
      await send(await toWav(recorded), "recording.wav");
    } catch (err) {
      showError(`Could not read the recording: ${err.message || err}`);
      setBusy(false);
    }
  };
  recorder.start();
  button.textContent = "Stop and send";
  button.setAttribute("aria-pressed", "true");
}

async function init() {
  $("record").addEventListener("click", toggleRecording);
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = $("audio-file").files[0];
    if (!file) { showError("Choose an audio file first."); return; }
    send(file, file.name);
  });
  try {
    const info = await (await fetch("/v1/info")).json();
    needsKey = info.auth_required;
    $("key-row").hidden = !needsKey;
    const caps = Object.entries(info.capabilities).filter(([, on]) => on).map(([name]) => name);
    $("status").textContent = `Ready: ${caps.join(", ")}.`;
  } catch (err) {
    $("status").textContent = "";
    showError(`The server did not answer: ${err.message || err}`);
  }
}

init();
