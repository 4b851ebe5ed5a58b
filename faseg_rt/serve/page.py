"""GET /: a page to try the service by hand. Plain HTML and script, no front-end framework.

It posts the form to the same POST /v1/segment as any client, decodes the returned label PNG
(a palette PNG, so the browser sees VOC colours, background black) and draws it at half opacity
over the photo, with a legend of the classes found (pixel counts, largest first).

Its Candidates field takes what the API's `candidates` field takes (a mode, or a JSON list of
class names) and also a comma list ("cat, sofa"), which the script sends as a JSON list.  The
button is disabled while a request runs; the EXIF checkbox sends exif_transpose=1, and the photo
under the mask is drawn as the mask was computed (upright with it, the stored pixels without:
createImageBitmap's imageOrientation), so a phone photo's overlay fits either way.  An error
shows the service's one line, or the HTTP status when the answer is not JSON.

DOCS_PAGE (GET /docs) lists the API from /openapi.json with no CDN (works offline).
"""

import json

from faseg_rt import rules

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FA-Seg</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; }
 form { display: grid; grid-template-columns: 9em 1fr; gap: .5em; max-width: 40em; }
 #status { margin: 1em 0; min-height: 1.2em; } .error { color: #b00; }
 canvas { max-width: 100%; border: 1px solid #ccc; }
 #legend { list-style: none; padding: 0; } #legend li { margin: .2em 0; }
 .swatch { display: inline-block; width: 1em; height: 1em; margin-right: .5em; vertical-align: middle; }
</style></head>
<body>
<h1>FA-Seg: open-vocabulary segmentation</h1>
<form id="form">
 <label for="image">Photo</label><input id="image" name="image" type="file" accept="image/*" required>
 <label for="classes">Classes</label><input id="classes" name="classes" placeholder="cat, dog, sofa" required>
 <label for="caption">Caption</label>
 <input id="caption" name="caption" placeholder="optional; 'auto' for a BLIP caption">
 <label for="candidates">Candidates</label>
 <input id="candidates" name="candidates"
        placeholder="optional; 'auto', 'caption', 'recognizer' or classes: cat, sofa">
 <label for="threshold">Threshold</label><input id="threshold" name="threshold" placeholder="optional, in [0, 1]">
 <label for="exif_transpose">Upright (EXIF)</label>
 <span><input id="exif_transpose" name="exif_transpose" type="checkbox" value="1">
  turn the photo as its EXIF orientation says first</span>
 <span></span><button id="submit" type="submit">Segment</button>
</form>
<p id="status"></p>
<canvas id="overlay" width="0" height="0"></canvas>
<ul id="legend"></ul>
<p><a href="/docs">API documentation (OpenAPI)</a></p>
<script>
function voc(k) {  // the PASCAL VOC colour of label k (faseg_rt.io.color_palette)
  let r = 0, g = 0, b = 0;
  for (let j = 0; j < 8; j++) {
    r |= ((k >> (3 * j)) & 1) << (7 - j); g |= ((k >> (3 * j + 1)) & 1) << (7 - j);
    b |= ((k >> (3 * j + 2)) & 1) << (7 - j);
  }
  return [r, g, b];
}
const MODES = __MODES__;  // the candidates modes the API takes (faseg_rt.rules)
function candidatesField(text) {  // a mode or a JSON list as typed; a comma list as a JSON list
  text = text.trim();
  if (!text || text.startsWith("[") || MODES.includes(text)) return text;
  return JSON.stringify(text.split(",").map(s => s.trim()).filter(s => s));
}
function loadImage(src) {
  return new Promise((ok, fail) => { const im = new Image(); im.onload = () => ok(im);
    im.onerror = () => fail(new Error("the browser cannot show this file")); im.src = src; });
}
async function photoAsSegmented(file, upright) {  // the pixels the mask refers to
  try { return await createImageBitmap(file, { imageOrientation: upright ? "from-image" : "none" }); }
  catch (e) { return loadImage(URL.createObjectURL(file)); }
}
async function readAnswer(r) {  // the JSON answer, or an error with the service's one line
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok || body === null)
    throw new Error((body && body.error) || ("the service answered HTTP " + r.status + " " + (r.statusText || "")));
  return body;
}
function draw(photo, mask, classes) {
  const canvas = document.getElementById("overlay"), w = mask.width, h = mask.height;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(mask, 0, 0);
  const m = ctx.getImageData(0, 0, w, h).data;
  ctx.drawImage(photo, 0, 0, w, h);
  const out = ctx.getImageData(0, 0, w, h), p = out.data, counts = new Map();
  const colour = classes.map((_, i) => voc(i + 1)).map(c => c.join(","));
  for (let i = 0; i < m.length; i += 4) {
    if (m[i] === 0 && m[i + 1] === 0 && m[i + 2] === 0) continue;  // background
    for (let c = 0; c < 3; c++) p[i + c] = Math.round(0.5 * p[i + c] + 0.5 * m[i + c]);
    const key = m[i] + "," + m[i + 1] + "," + m[i + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  ctx.putImageData(out, 0, 0);
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const found = classes.map((name, i) => [name, colour[i], counts.get(colour[i]) || 0])
    .filter(e => e[2] > 0).sort((a, b) => b[2] - a[2]);
  for (const [name, rgb, n] of found) {
    const li = document.createElement("li"), sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = "rgb(" + rgb + ")";
    li.append(sw, name + " (" + (100 * n / (w * h)).toFixed(1) + "%)");
    li.dataset.pixels = n; legend.append(li);
  }
  canvas.dataset.labelled = [...counts.values()].reduce((a, b) => a + b, 0);
  return found.length;
}
document.getElementById("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const status = document.getElementById("status"), form = new FormData(ev.target);
  const button = document.getElementById("submit");
  form.set("candidates", candidatesField(form.get("candidates") || ""));
  for (const k of ["caption", "candidates", "threshold", "exif_transpose"]) if (!form.get(k)) form.delete(k);
  status.className = ""; status.textContent = "segmenting ..."; status.dataset.done = "0";
  button.disabled = true;
  try {
    const r = await fetch("/v1/segment", { method: "POST", body: form });
    const body = await readAnswer(r);
    const photo = await photoAsSegmented(form.get("image"), form.has("exif_transpose"));
    const mask = await loadImage("data:image/png;base64," + body.labels_png);
    const n = draw(photo, mask, body.classes);
    status.textContent = body.width + " x " + body.height + ", " + n + " class(es) found" +
      (body.caption ? ", caption: " + body.caption : "") +
      (form.has("candidates") ? ", candidates: " + body.candidates.join(", ") : "");
    status.dataset.done = "1";
  } catch (e) {
    status.className = "error"; status.textContent = e.message; status.dataset.done = "1";
  } finally {
    button.disabled = false;
  }
});
</script>
</body></html>
"""

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FA-Seg API</title>
<style> body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; }
 code { background: #f4f4f4; padding: 0 .2em; } li { margin: .3em 0; } </style></head>
<body><h1>FA-Seg API</h1>
<p>The machine-readable description: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3; load it
into any OpenAPI viewer). The routes and form fields, read from it:</p>
<div id="api">loading /openapi.json ...</div>
<script>
fetch("/openapi.json").then(r => r.json()).then(spec => {
  const out = document.getElementById("api"); out.replaceChildren();
  for (const [path, ops] of Object.entries(spec.paths)) for (const [verb, op] of Object.entries(ops)) {
    const h = document.createElement("h2"); h.textContent = verb.toUpperCase() + " " + path;
    const p = document.createElement("p"); p.textContent = op.summary || "";
    out.append(h, p);
    const form = (((op.requestBody || {}).content || {})["multipart/form-data"] || {}).schema;
    if (!form) continue;
    const ul = document.createElement("ul");
    for (const [name, f] of Object.entries(form.properties)) {
      const li = document.createElement("li"), c = document.createElement("code");
      c.textContent = name; li.append(c, (form.required.includes(name) ? " (required) " : " ") +
        (f.description || ""));
      ul.append(li);
    }
    out.append(ul);
  }
}).catch(e => { document.getElementById("api").textContent = "cannot read /openapi.json: " + e.message; });
</script></body></html>
"""

#: The page GET / serves, with the candidates modes (and their aliases) of faseg_rt.rules.
PAGE = _PAGE.replace("__MODES__", json.dumps([*rules.CANDIDATE_MODES, *rules.CANDIDATE_MODE_ALIASES]))
