// The page of `mobilenet-v1 serve`: classify a photo on the server (/v1/classify) or in
// this browser with onnxruntime-web (WASM), the model's own ONNX file and preprocessing
// (resize the shorter side, centre crop, scale by the mean and std): nothing is sent then.

const $ = (id) => document.getElementById(id);
const TOPK = 5;
let info = null;
let session = null;

function currentMode() {
  return new URLSearchParams(location.search).get("run") === "browser" ? "browser" : "server";
}

function setMode(mode) {
  const url = new URL(location.href);
  if (mode === "browser") url.searchParams.set("run", "browser");
  else url.searchParams.delete("run");
  history.replaceState(null, "", url);
  for (const radio of document.querySelectorAll("input[name=run]")) radio.checked = radio.value === mode;
  showNotice();
}

function showNotice() {
  const notice = $("notice");
  let text = "";
  if (currentMode() === "browser" && info && !info.onnx) {
    text = "This server's model is not an ONNX file, so the browser cannot run it: serve an .onnx model.";
  } else if (currentMode() === "browser" && info && !info.browser) {
    text = "Browser mode needs onnxruntime-web's files: run `make web` in the repository, or `npm install " +
      "onnxruntime-web` and start the server with --web-runtime node_modules/onnxruntime-web/dist.";
  }
  notice.textContent = text;
  notice.hidden = !text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadRuntime() {
  if (window.ort) return window.ort;
  await new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/ort/ort.wasm.min.js";
    script.onload = resolve;
    script.onerror = () => reject(new Error("onnxruntime-web could not be loaded from /ort/ort.wasm.min.js"));
    document.head.appendChild(script);
  });
  window.ort.env.wasm.wasmPaths = "/ort/";
  window.ort.env.wasm.numThreads = 1; // threads need a cross-origin isolated page
  return window.ort;
}

async function pixels(file) {
  const { resolution, resize, mean, std } = info.preprocessing;
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const scale = resize / Math.min(bitmap.width, bitmap.height);
  const w = Math.floor(bitmap.width * scale + 1e-6);
  const h = Math.floor(bitmap.height * scale + 1e-6);
  const canvas = new OffscreenCanvas(resolution, resolution);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, -Math.round((w - resolution) / 2), -Math.round((h - resolution) / 2), w, h);
  const rgba = ctx.getImageData(0, 0, resolution, resolution).data;
  const plane = resolution * resolution;
  const out = info.uint8 ? new Uint8Array(3 * plane) : new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = rgba[4 * i + c];
      out[c * plane + i] = info.uint8 ? v : (v / 255 - mean[c]) / std[c];
    }
  }
  return out;
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

async function classifyInBrowser(file) {
  const started = performance.now();
  const ort = await loadRuntime();
  session = session || (await ort.InferenceSession.create("/v1/model.onnx", { executionProviders: ["wasm"] }));
  const { resolution } = info.preprocessing;
  const data = await pixels(file);
  const input = new ort.Tensor(info.uint8 ? "uint8" : "float32", data, [1, 3, resolution, resolution]);
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const scores = Array.from(outputs[session.outputNames[0]].data);
  const probs = info.uint8 ? scores.map((v) => v / 256) : softmax(scores);
  for (const i of info.ignore) probs[i] = -1;
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, TOPK);
  return {
    predictions: order.map(([p, i]) => ({ label: info.classes[i], index: i, probability: p })),
    ms: performance.now() - started,
    where: "in this browser (onnxruntime-web, WASM)",
  };
}

async function classifyOnServer(file) {
  const started = performance.now();
  const response = await fetch(`/v1/classify?topk=${TOPK}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return { predictions: body.predictions, ms: performance.now() - started, where: "on the server" };
}

function render(file, result) {
  $("photo").src = URL.createObjectURL(file);
  $("top-label").textContent = result.predictions[0].label;
  const list = $("predictions");
  list.replaceChildren();
  for (const p of result.predictions) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = `${p.label} ${(100 * p.probability).toFixed(1)}%`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, 100 * p.probability).toFixed(1)}%`;
    item.append(text, bar);
    list.append(item);
  }
  $("timing").textContent = `${result.ms.toFixed(1)} ms ${result.where}`;
  $("result").hidden = false;
}

async function classify(file) {
  showError("");
  try {
    const result = currentMode() === "browser" ? await classifyInBrowser(file) : await classifyOnServer(file);
    render(file, result);
  } catch (err) {
    showError(err.message || String(err));
  }
}

async function startCamera() {
  const video = $("video");
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  video.hidden = false;
  $("snap").hidden = false;
  await video.play();
}

async function snap() {
  const video = $("video");
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await canvas.convertToBlob({ type: "image/jpeg", quality: 0.92 });
  await classify(new File([blob], "camera.jpg", { type: "image/jpeg" }));
}

async function main() {
  for (const radio of document.querySelectorAll("input[name=run]")) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  setMode(currentMode());
  $("file").addEventListener("change", () => $("file").files[0] && classify($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
  });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    $("camera").hidden = false;
    $("camera").addEventListener("click", () => startCamera().catch((err) => showError(err.message)));
    $("snap").addEventListener("click", snap);
  }
  const response = await fetch("/v1/model");
  info = await response.json();
  $("model").textContent = `${info.name}: ${info.classes.length} classes, ${info.preprocessing.resolution} px, ` +
    `served by ${info.runtime}`;
  showNotice();
  document.body.dataset.ready = "true";
}

main().catch((err) => showError(err.message || String(err)));
