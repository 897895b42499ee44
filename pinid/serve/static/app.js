// The pinid page: pick or drop a photo, ask /v1/identify, draw the answer.
// Plain JS, no build step. Every catalogue or user string goes in through
// textContent / setAttribute, never innerHTML, so a pin named like markup
// stays text. The page's CSP forbids inline script and style attributes in
// markup, so dynamic sizes and positions are set through element.style.
"use strict";

(() => {
  const CANDIDATES = 5;
  const COLOURS = 8; // board outlines cycle through .c0 ... .c7 (style.css)
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const ui = {
    input: $("photo-input"), drop: $("drop"), multi: $("multi"), status: $("status"),
    error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"), retry: $("retry"),
    result: $("result"), frame: $("frame"), photo: $("photo"), overlay: $("overlay"), tags: $("tags"),
    noPreview: $("no-preview"), caption: $("photo-caption"), answer: $("answer"),
    candidatesSection: $("candidates-section"), candidatesTitle: $("candidates-title"), candidates: $("candidates"),
    info: $("catalogue-info"), version: $("version"), search: $("search"), searchForm: $("search-form"),
    searchInput: $("search-input"), searchStatus: $("search-status"), searchResults: $("search-results"),
  };
  const state = { file: null, photoUrl: null, controller: null, searchController: null, tags: [] };

  // ------------------------------------------------------------------ helpers
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  /** A URL of this server only (the API gives paths like /v1/pins/ID/images/0). */
  function localUrl(path, query) {
    if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) return null;
    return query ? `${path}?${query}` : path;
  }

  // As the CLI writes it: a calibrated probability never promises "100%" or "0%".
  function percent(p) {
    const value = Number(p);
    if (value >= 0.995) return ">99%";
    if (value < 0.005) return "<1%";
    return `${Math.round(value * 100)}%`;
  }

  function formatScore(score) {
    if (typeof score !== "number" || !Number.isFinite(score)) return null;
    return score > 0 && score < 0.001 ? "<0.001" : score.toFixed(3);
  }

  function level(p) {
    return p >= 0.9 ? "high" : p >= 0.5 ? "medium" : "low";
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  /** GET or POST, answering parsed JSON; a non-2xx answer throws with the API's own message. */
  async function api(url, options) {
    let response;
    try {
      response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw Object.assign(new Error("The pinid server could not be reached. Is it still running?"),
                          { status: 0, retry: true });
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.message === "string" ? body.message
        : `The server answered ${response.status} ${response.statusText}`.trim();
      throw Object.assign(new Error(message), { status: response.status, code: body && body.error,
                                                retry: response.status >= 500 });
    }
    if (body === null) throw Object.assign(new Error("The server's answer was not JSON."), { status: response.status });
    return body;
  }

  const ERROR_TITLES = {
    0: "No connection", 413: "That photo is too large", 415: "That file is not a photo pinid can read",
    422: "The request was not understood", 503: "pinid is busy", 409: "Not supported by this catalogue",
  };

  function showError(err, fileName) {
    ui.errorTitle.textContent = ERROR_TITLES[err.status]
      || (fileName ? `Could not identify ${fileName}` : "Something went wrong");
    ui.errorMessage.textContent = err.message || "Unknown error";
    ui.retry.hidden = !(err.retry && state.file);
    ui.error.hidden = false;
  }

  function hideError() {
    ui.error.hidden = true;
  }

  function setBusy(text) {
    clear(ui.status);
    if (!text) {
      ui.status.classList.remove("busy");
      ui.result.removeAttribute("aria-busy");
      ui.frame.classList.remove("scanning");
      return;
    }
    ui.status.classList.add("busy");
    ui.status.append(el("span", "spinner"), el("span", null, text));
    ui.result.setAttribute("aria-busy", "true");
    ui.frame.classList.add("scanning");
  }

  // ---------------------------------------------------------- small widgets
  function confidenceBar(p, label) {
    const wrap = el("div", "confidence");
    if (typeof p !== "number" || !Number.isFinite(p)) {
      wrap.append(el("span", "confidence-text muted", "confidence not available"));
      return wrap;
    }
    const bar = el("div", `bar ${level(p)}`);
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (p * 100).toFixed(2));
    bar.setAttribute("aria-label", label || "confidence");
    const fill = el("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    bar.append(fill);
    wrap.append(bar, el("span", "confidence-text", `${percent(p)} ${label || "confidence"}`));
    return wrap;
  }

  function metadataList(metadata) {
    const entries = metadata && typeof metadata === "object" ? Object.entries(metadata) : [];
    if (!entries.length) return null;
    const list = el("dl", "meta");
    for (const [key, value] of entries) {
      const row = el("div", "meta-row");
      const shown = typeof value === "string" ? value : JSON.stringify(value);
      row.append(el("dt", null, key), el("dd", null, shown));
      list.append(row);
    }
    return list;
  }

  function thumbnail(match, size, className) {
    const url = localUrl(match.reference_image_url, `size=${size}`);
    if (!url) {
      const none = el("div", `${className} thumb-missing`, "no picture");
      none.setAttribute("role", "img");
      none.setAttribute("aria-label", `no reference picture of ${match.name || match.pin_id}`);
      return none;
    }
    const img = el("img", className);
    img.src = url;
    img.alt = `Reference picture of ${match.name || match.pin_id}`;
    img.decoding = "async";
    img.width = size;
    img.height = size;
    return img;
  }

  function pinCard(match, options) {
    const item = el("li", `card${options.className ? ` ${options.className}` : ""}`);
    if (options.colour !== undefined) item.classList.add(`c${options.colour % COLOURS}`);
    item.dataset.pinId = match.pin_id;
    const media = el("div", "card-media");
    media.append(thumbnail(match, 256, "thumb"));
    if (options.badge) media.append(el("span", "badge", options.badge));
    const body = el("div", "card-body");
    const title = el("h3", "name", match.name || match.pin_id);
    const id = el("p", "pin-id");
    id.append(el("code", null, match.pin_id));
    body.append(title, id);
    if (options.confidence !== undefined) body.append(confidenceBar(options.confidence));
    const numbers = [];
    const score = formatScore(match.score);
    if (score !== null) numbers.push(`score ${score}`);
    if (typeof match.similarity === "number") numbers.push(`similarity ${match.similarity.toFixed(3)}`);
    if (typeof match.inliers === "number" && match.inliers > 0) numbers.push(`${match.inliers} matching points`);
    if (numbers.length) body.append(el("p", "scores", numbers.join(" · ")));
    const meta = metadataList(match.metadata);
    if (meta) body.append(meta);
    item.append(media, body);
    return item;
  }

  // ------------------------------------------------------------- the photo
  function showPhoto(file) {
    if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
    state.photoUrl = URL.createObjectURL(file);
    ui.frame.classList.remove("no-image");
    ui.noPreview.hidden = true;
    ui.photo.alt = `Your photo: ${file.name || "photo"}`;
    ui.photo.src = state.photoUrl;
    clear(ui.overlay);
    clear(ui.tags);
    state.tags = [];
    ui.caption.textContent = file.name || "";
  }

  function validPolygon(polygon) {
    return Array.isArray(polygon) && polygon.length >= 3
      && polygon.every((p) => Array.isArray(p) && p.length === 2 && p.every((v) => Number.isFinite(Number(v))));
  }

  /** Outlines in photo pixels: the SVG's viewBox is the upright photo's size, so they scale with it. */
  function drawOutlines(size, outlines) {
    clear(ui.overlay);
    clear(ui.tags);
    state.tags = [];
    const [width, height] = size;
    if (!(width > 0 && height > 0)) return;
    ui.overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    ui.overlay.setAttribute("preserveAspectRatio", "none");
    for (const outline of outlines) {
      if (!validPolygon(outline.polygon)) continue;
      const points = outline.polygon.map(([x, y]) => `${Number(x)},${Number(y)}`).join(" ");
      const group = svg("g", { class: `outline-group c${outline.colour % COLOURS}` });
      const line = svg("polygon", { points, class: "outline", "vector-effect": "non-scaling-stroke" });
      line.dataset.pinId = outline.pinId;
      group.append(svg("polygon", { points, class: "halo", "vector-effect": "non-scaling-stroke" }), line);
      ui.overlay.append(group);
      if (outline.label) {
        const label = tag(outline);
        ui.tags.append(label);
        state.tags.push({ label, spots: tagSpots(outline.polygon, width, height) });
      }
    }
    placeTags();
  }

  function tag(outline) {
    const label = el("span", `tag c${outline.colour % COLOURS}`);
    label.dataset.pinId = outline.pinId;
    if (outline.number) label.append(el("span", "tag-number", outline.number));
    label.append(el("span", "tag-name", outline.label));
    if (outline.detail) label.append(el("span", "tag-detail", outline.detail));
    return label;
  }

  /** Where a label may go, best first: above the outline, below it, then just inside it. */
  function tagSpots(polygon, width, height) {
    const points = polygon.map(([x, y]) => [Math.max(0, Math.min(1, Number(x) / width)),
                                            Math.max(0, Math.min(1, Number(y) / height))]);
    const top = points.reduce((a, b) => (b[1] < a[1] ? b : a));
    const bottom = points.reduce((a, b) => (b[1] > a[1] ? b : a));
    return [{ at: top, below: false }, { at: bottom, below: true },
            { at: top, below: true }, { at: bottom, below: false }];
  }

  function putTag(label, spot) {
    const [x, y] = spot.at;
    label.classList.toggle("below", spot.below);
    label.classList.toggle("above", !spot.below);
    label.classList.toggle("from-left", x < 0.2);
    label.classList.toggle("from-right", x > 0.8);
    label.style.left = `${x * 100}%`;
    label.style.top = `${y * 100}%`;
  }

  /** Each label at its first spot that stays inside the photo and clear of the labels placed before it. */
  function placeTags() {
    if (!state.tags || !state.tags.length) return;
    const frame = ui.frame.getBoundingClientRect();
    const placed = [];
    const fits = (r) => r.left >= frame.left - 1 && r.right <= frame.right + 1
      && r.top >= frame.top - 1 && r.bottom <= frame.bottom + 1;
    const clashes = (r) => placed.some((p) => r.left < p.right + 2 && r.right > p.left - 2
                                               && r.top < p.bottom + 2 && r.bottom > p.top - 2);
    for (const { label, spots } of state.tags) {
      let chosen = null;
      for (const spot of spots) {
        putTag(label, spot);
        const box = label.getBoundingClientRect();
        if (fits(box) && !clashes(box)) {
          chosen = box;
          break;
        }
      }
      if (!chosen) {
        putTag(label, spots.find((spot) => spot.below === (spot.at[1] < 0.12)) || spots[0]);
        chosen = label.getBoundingClientRect();
      }
      placed.push(chosen);
    }
  }

  // ------------------------------------------------------------ the answers
  function renderSingle(body) {
    const matches = Array.isArray(body.matches) ? body.matches : [];
    const best = matches[0];
    const unknown = Boolean(body.unknown) || !best;
    clear(ui.answer);
    const card = el("div", `answer-card ${unknown ? "unknown" : "known"}`);
    if (unknown) {
      const mark = el("div", "unknown-mark", "?");
      mark.setAttribute("aria-hidden", "true");
      const text = el("div", "answer-text");
      text.append(el("p", "kicker", "No match"),
                  el("h2", "answer-name", "Unknown pin — not in the catalogue as far as pinid can tell"),
                  el("p", "hint", matches.length
                    ? "The nearest pins are listed below, but none of them matches this photo well enough. "
                      + "A sharper photo, straight on and filling more of the frame, may help."
                    : "The catalogue has no pin close to this photo."));
      if (typeof body.confidence === "number") text.append(confidenceBar(body.confidence, "confidence in the best guess"));
      card.append(mark, text);
    } else {
      const text = el("div", "answer-text");
      text.append(el("p", "kicker", "This is"), el("h2", "answer-name", best.name || best.pin_id));
      const id = el("p", "pin-id");
      id.append(el("code", null, best.pin_id));
      text.append(id, confidenceBar(body.confidence));
      const meta = metadataList(best.metadata);
      if (meta) text.append(meta);
      card.append(thumbnail(best, 384, "answer-thumb"), text);
    }
    ui.answer.append(card);

    clear(ui.candidates);
    ui.candidatesTitle.textContent = unknown ? "Nearest candidates" : "Top candidates";
    matches.forEach((match, i) => {
      ui.candidates.append(pinCard(match, { badge: `#${match.rank || i + 1}`,
                                            className: i === 0 && !unknown ? "candidate best" : "candidate" }));
    });
    ui.candidatesSection.hidden = matches.length === 0;

    const outlines = !unknown && validPolygon(best.polygon)
      ? [{ polygon: best.polygon, colour: 0, label: best.name || best.pin_id, pinId: best.pin_id }] : [];
    drawOutlines(body.image_size || [], outlines);
    captionSize(body.image_size);
  }

  function renderBoard(body) {
    const pins = Array.isArray(body.pins) ? body.pins : [];
    clear(ui.answer);
    clear(ui.candidates);
    const card = el("div", `answer-card board${pins.length ? "" : " unknown"}`);
    const text = el("div", "answer-text");
    if (pins.length) {
      text.append(el("p", "kicker", "Board"),
                  el("h2", "answer-name", pins.length === 1 ? "1 pin found" : `${pins.length} pins found`),
                  el("p", "hint", "Each pin is outlined on the photo in the colour of its entry below."));
    } else {
      const mark = el("div", "unknown-mark", "?");
      mark.setAttribute("aria-hidden", "true");
      card.append(mark);
      text.append(el("p", "kicker", "Board"),
                  el("h2", "answer-name", "No catalogue pins found on this photo"),
                  el("p", "hint", "Unknown pins, or pins too small to recognise: try a closer photo."));
    }
    card.append(text);
    ui.answer.append(card);
    ui.candidatesTitle.textContent = "Pins on this board";
    pins.forEach((pin, i) => ui.candidates.append(pinCard(pin, { colour: i, badge: String(i + 1),
                                                                 confidence: pin.confidence, className: "found" })));
    ui.candidatesSection.hidden = pins.length === 0;
    const outlines = pins.map((pin, i) => ({
      polygon: pin.polygon, colour: i, number: String(i + 1), label: pin.name || pin.pin_id, pinId: pin.pin_id,
      detail: typeof pin.confidence === "number" ? percent(pin.confidence) : null,
    }));
    drawOutlines(body.image_size || [], outlines);
    captionSize(body.image_size);
  }

  function captionSize(size) {
    const name = state.file && state.file.name ? state.file.name : "photo";
    ui.caption.textContent = Array.isArray(size) && size.length === 2 ? `${name} · ${size[0]} × ${size[1]} px` : name;
  }

  // ------------------------------------------------------------- identify
  async function identify(file) {
    if (!file) return;
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    state.file = file;
    const multi = ui.multi.checked;
    hideError();
    clear(ui.answer);
    clear(ui.candidates);
    ui.candidatesSection.hidden = true;
    showPhoto(file);
    ui.result.hidden = false;
    ui.result.classList.toggle("board-mode", multi);
    setBusy(multi ? "Looking for every pin on the photo…" : "Identifying the pin…");
    const form = new FormData();
    form.append("image", file, file.name || "photo");
    const query = new URLSearchParams({ k: String(CANDIDATES), multi: String(multi) });
    try {
      const body = await api(`/v1/identify?${query}`, { method: "POST", body: form, signal: controller.signal });
      if (state.controller !== controller) return;
      if (multi) renderBoard(body); else renderSingle(body);
      revealAnswer();
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (state.controller !== controller) return;
      ui.result.hidden = true;
      showError(err, file.name);
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        setBusy(null);
      }
    }
  }

  /** On a small screen the answer may be below the fold: bring it up (the photo follows it there). */
  function revealAnswer() {
    const box = ui.answer.getBoundingClientRect();
    if (box.height && box.bottom > window.innerHeight) {
      const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      ui.answer.scrollIntoView({ block: "start", behavior: smooth ? "smooth" : "auto" });
    }
  }

  function firstImage(files) {
    if (!files || !files.length) return null;
    return Array.from(files).find((f) => !f.type || f.type.startsWith("image/")) || files[0];
  }

  // --------------------------------------------------------------- search
  async function search(text) {
    if (state.searchController) state.searchController.abort();
    const controller = new AbortController();
    state.searchController = controller;
    clear(ui.searchResults);
    ui.searchStatus.textContent = "Searching…";
    ui.searchStatus.classList.add("busy");
    try {
      const query = new URLSearchParams({ q: text, k: String(CANDIDATES) });
      const body = await api(`/v1/search?${query}`, { signal: controller.signal });
      if (state.searchController !== controller) return;
      const matches = Array.isArray(body.matches) ? body.matches : [];
      ui.searchStatus.textContent = matches.length
        ? `${matches.length} ${matches.length === 1 ? "pin" : "pins"} for “${text}”` : `No pins for “${text}”`;
      matches.forEach((match, i) => ui.searchResults.append(pinCard(match, { badge: `#${match.rank || i + 1}`,
                                                                               className: "search-result" })));
    } catch (err) {
      if (err && err.name === "AbortError") return;
      ui.searchStatus.textContent = `Search failed: ${err.message}`;
    } finally {
      if (state.searchController === controller) {
        state.searchController = null;
        ui.searchStatus.classList.remove("busy");
      }
    }
  }

  // ---------------------------------------------------------------- start
  async function loadInfo() {
    try {
      const info = await api("/v1/index");
      const pins = Number(info.pins) || 0;
      const images = Number(info.images) || 0;
      clear(ui.info);
      ui.info.append(el("span", null, `${pins.toLocaleString()} ${pins === 1 ? "pin" : "pins"}`),
                     el("span", "info-images",
                        ` · ${images.toLocaleString()} reference ${images === 1 ? "picture" : "pictures"}`));
      if (info.version) ui.version.textContent = `pinid ${info.version}`;
      ui.search.hidden = info.text_search !== true;
    } catch (err) {
      ui.info.textContent = "catalogue unavailable";
    }
  }

  function wire() {
    ui.input.addEventListener("change", () => {
      identify(firstImage(ui.input.files));
      ui.input.value = ""; // choosing the same file again identifies it again
    });
    ui.multi.addEventListener("change", () => {
      if (state.file) identify(state.file); // the same photo, in the other mode
    });
    ui.retry.addEventListener("click", () => identify(state.file));
    ui.photo.addEventListener("load", placeTags);
    if (window.ResizeObserver) new ResizeObserver(() => placeTags()).observe(ui.frame);
    ui.photo.addEventListener("error", () => {
      if (!ui.photo.getAttribute("src")) return;
      ui.frame.classList.add("no-image");
      ui.noPreview.hidden = false;
    });

    let depth = 0;
    const dragging = (on) => document.body.classList.toggle("dragging", on);
    document.addEventListener("dragenter", (event) => {
      if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
      depth += 1;
      dragging(true);
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) dragging(false);
    });
    document.addEventListener("dragover", (event) => event.preventDefault());
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      dragging(false);
      const file = firstImage(event.dataTransfer && event.dataTransfer.files);
      if (file) identify(file);
    });
    document.addEventListener("paste", (event) => {
      if (event.target === ui.searchInput) return;
      const file = firstImage(event.clipboardData && event.clipboardData.files);
      if (file) identify(file);
    });
    ui.searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = ui.searchInput.value.trim();
      if (text) search(text);
    });
  }

  wire();
  loadInfo();
})();
