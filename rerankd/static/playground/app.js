// rerankd playground: plain JavaScript, no dependencies, talks only to the server it came from.
"use strict";

(() => {
  const KEY_STORAGE = "rerankd.apiKey";
  const EXAMPLES = {
    english: {
      query: "What new features does the latest iPhone have?",
      passages: [
        "Apples are a common fruit rich in vitamin C.",
        "The iPhone 15 Pro has a titanium frame and a USB-C port.",
        "Apple pie is a traditional dessert made with baked apples.",
        "The new iPhone camera records spatial video for the Vision Pro.",
      ],
    },
    // The seed tutorial's example. The built-in model is English-only: it ranks these badly,
    // and the server says so (`warnings` in the JSON and a Warning header), shown above the results.
    chinese: {
      query: "苹果手机有哪些新功能?",
      passages: [
        "苹果是一种很受欢迎的水果，口感清脆香甜。",
        "iPhone 15 Pro 采用钛金属边框和 USB-C 接口。",
        "苹果公司发布的新款手机支持卫星通信功能。",
        "香蕉富含钾元素。",
      ],
    },
  };

  const $ = (id) => document.getElementById(id);
  const els = {
    form: $("rerank-form"), model: $("model"), key: $("api-key"), query: $("query"),
    instructionField: $("instruction-field"), instruction: $("instruction"),
    passages: $("passages"), jsonl: $("jsonl"), topN: $("top-n"), spans: $("spans"), rank: $("rank"),
    status: $("status"), error: $("error"), warning: $("warning"), stats: $("stats"),
    results: $("results"), snippet: $("snippet"), copy: $("copy"), copyStatus: $("copy-status"),
  };
  let modelInfo = {}; // served name -> its /info entry
  let fileDocuments = null; // documents from a JSON Lines file, when one is loaded
  let format = "curl";

  // Credentials --------------------------------------------------------------------------

  function apiKey() {
    return els.key.value.trim();
  }

  function headers() {
    const result = { "Content-Type": "application/json" };
    if (apiKey()) result.Authorization = `Bearer ${apiKey()}`;
    return result;
  }

  // Server messages are shown as they are: the status line and the error's own message.
  async function errorText(response) {
    const text = await response.text();
    let message = text;
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "object" && body.error !== null) message = body.error.message;
      else if (body && typeof body.error === "string") message = body.error;
      else if (body && body.detail !== undefined) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON: the text itself */ }
    return `${response.status} ${response.statusText}: ${message}`;
  }

  function showError(text) {
    els.error.textContent = text;
    els.error.hidden = !text;
  }

  // Models -------------------------------------------------------------------------------

  async function loadModels() {
    showError("");
    let response;
    try {
      response = await fetch("/v1/models", { headers: headers() });
    } catch (err) {
      showError(`The server did not answer: ${err.message}`);
      return;
    }
    if (!response.ok) {
      showError(await errorText(response));
      els.model.replaceChildren(new Option("(enter the API key to list models)", ""));
      return;
    }
    const cards = (await response.json()).data || [];
    if (!cards.length) { // the server is still loading its models
      els.model.replaceChildren(new Option("(models are loading…)", ""));
      setTimeout(loadModels, 2000);
      return;
    }
    const previous = els.model.value;
    els.model.replaceChildren(...cards.map((card) => new Option(card.id, card.id)));
    if (cards.some((card) => card.id === previous)) els.model.value = previous;
    await loadInfo();
    updateInstruction();
    updateSnippet();
  }

  async function loadInfo() {
    try {
      const response = await fetch("/info", { headers: headers() });
      if (!response.ok) return;
      const info = await response.json();
      modelInfo = Object.fromEntries((info.models || []).map((m) => [m.name, m]));
    } catch (_) { /* optional: only the instruction field depends on it */ }
  }

  // /info says per model whether it takes an instruction (`instruction: true`) and its
  // default (`default_instruction`), shown as the field's placeholder.
  function updateInstruction() {
    const info = modelInfo[els.model.value] || {};
    const takes = info.instruction === true;
    els.instructionField.hidden = !takes;
    els.instruction.placeholder = typeof info.default_instruction === "string" ? info.default_instruction : "";
  }

  // The request ----------------------------------------------------------------------------

  function documents() {
    if (fileDocuments !== null) return fileDocuments;
    return els.passages.value.split("\n").map((line) => line.trim()).filter((line) => line);
  }

  function requestBody() {
    const body = { query: els.query.value, documents: documents() };
    if (els.model.value) body.model = els.model.value;
    const topN = els.topN.value.trim();
    if (topN) body.top_n = Number(topN);
    if (!els.instructionField.hidden && els.instruction.value.trim()) body.instruction = els.instruction.value;
    if (els.spans.checked) body.return_spans = true;
    body.return_documents = true;
    return body;
  }

  async function rank(event) {
    event.preventDefault();
    const body = requestBody();
    showError("");
    els.warning.hidden = true;
    els.rank.disabled = true;
    els.status.textContent = "Ranking…";
    const started = performance.now();
    let response;
    try {
      response = await fetch("/rerank", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    } catch (err) {
      els.rank.disabled = false;
      els.status.textContent = "";
      showError(`The server did not answer: ${err.message}`);
      return;
    }
    const latency = performance.now() - started;
    els.rank.disabled = false;
    if (!response.ok) {
      els.status.textContent = "The server refused the request.";
      els.results.replaceChildren();
      els.stats.hidden = true;
      showError(await errorText(response));
      return;
    }
    const result = await response.json();
    // The body's `warnings` keep any text the ASCII-only header could not; the header is the
    // fallback for an older server.
    const header = response.headers.get("warning");
    const warnings = result.warnings || (header ? [warningText(header)] : []);
    if (warnings.length) {
      els.warning.textContent = warnings.map((text) => `Warning: ${text}`).join("\n");
      els.warning.hidden = false;
    }
    render(result, body.documents.length, latency);
    els.status.textContent = `Ranked ${body.documents.length} passages in ${Math.round(latency)} ms.`;
  }

  // `299 rerankd "text"` -> text (RFC 7234 quoted string).
  function warningText(header) {
    const match = header.match(/^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"/);
    return match ? match[1].replace(/\\(.)/g, "$1") : header;
  }

  function render(result, count, latency) {
    $("stat-model").textContent = result.model;
    $("stat-latency").textContent = `${Math.round(latency)} ms`;
    $("stat-tokens").textContent = String(result.usage.tokens);
    $("stat-cached").textContent = `${result.usage.cached} of ${result.usage.documents}`;
    els.stats.hidden = false;
    els.results.replaceChildren(...result.results.map((item, rank) => resultItem(item, rank, count)));
  }

  function resultItem(item, rank, count) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.index = String(item.index);
    li.dataset.score = String(item.score);
    const moved = item.index - rank; // positive: moved up
    const width = Math.max(0, Math.min(1, item.score)) * 100;
    const movement = moved > 0 ? `up ${moved}` : moved < 0 ? `down ${-moved}` : "unchanged";
    const arrow = moved > 0 ? `▲ ${moved}` : moved < 0 ? `▼ ${-moved}` : "–";
    li.innerHTML = `
      <div class="result-head">
        <span class="score"></span>
        <span class="position"></span>
        <span class="movement"></span>
      </div>
      <div class="bar" role="img"><div class="fill"></div></div>
      <p class="document"></p>`;
    li.querySelector(".score").textContent = item.score.toFixed(4);
    li.querySelector(".position").textContent = `was #${item.index + 1} of ${count}`;
    const movementEl = li.querySelector(".movement");
    movementEl.textContent = arrow;
    movementEl.classList.add(moved > 0 ? "up" : moved < 0 ? "down" : "same");
    movementEl.setAttribute("aria-label", `moved ${movement}`);
    const bar = li.querySelector(".bar");
    bar.setAttribute("aria-label", `score ${item.score.toFixed(4)}`);
    li.querySelector(".fill").style.width = `${width}%`;
    const documentEl = li.querySelector(".document");
    if (Array.isArray(item.spans)) documentEl.replaceChildren(...highlighted(item.document, item.spans));
    else documentEl.textContent = item.document;
    return li;
  }

  // Span offsets count Unicode code points (as Python indexes a string), while a JavaScript
  // string counts UTF-16 units: cut the code points, or an emoji before a span shifts it.
  // Spans may overlap (windows of several sentences): every boundary cuts, and each piece is
  // marked with the best span covering it; rank 1 is the best span of the document.
  function highlighted(text, spans) {
    const points = Array.from(text);
    const ranked = spans.map((span, i) => ({ ...span, rank: i + 1 }));
    const cuts = new Set([0, points.length]);
    ranked.forEach((s) => { cuts.add(Math.max(0, Math.min(points.length, s.start))); cuts.add(Math.max(0, Math.min(points.length, s.end))); });
    const bounds = Array.from(cuts).sort((a, b) => a - b);
    const nodes = [];
    for (let i = 0; i + 1 < bounds.length; i += 1) {
      const [from, to] = [bounds[i], bounds[i + 1]];
      const piece = points.slice(from, to).join("");
      const covering = ranked.filter((s) => s.start <= from && to <= s.end);
      if (!covering.length) {
        nodes.push(document.createTextNode(piece));
        continue;
      }
      const best = covering.reduce((a, b) => (b.rank < a.rank ? b : a));
      const mark = document.createElement("mark");
      mark.className = `span span-${Math.min(best.rank, 3)}`;
      mark.dataset.rank = String(best.rank);
      mark.dataset.start = String(from);
      mark.dataset.end = String(to);
      mark.dataset.score = String(best.score);
      mark.title = `span ${best.rank}: score ${best.score.toFixed(4)}`;
      mark.textContent = piece;
      nodes.push(mark);
    }
    return nodes;
  }

  // JSON Lines ------------------------------------------------------------------------------

  function parseJsonl(text, name) {
    const docs = [];
    text.split("\n").forEach((line, i) => {
      if (!line.trim()) return;
      let item;
      try {
        item = JSON.parse(line);
      } catch (err) {
        throw new Error(`${name}, line ${i + 1}: not JSON (${err.message})`);
      }
      if (item && typeof item === "object" && !Array.isArray(item)) item = item.text ?? item.document;
      if (typeof item !== "string") throw new Error(`${name}, line ${i + 1}: expected a string or an object with "text"`);
      docs.push(item);
    });
    return docs;
  }

  async function loadFile() {
    const file = els.jsonl.files[0];
    if (!file) {
      fileDocuments = null;
      els.passages.readOnly = false;
      updateSnippet();
      return;
    }
    try {
      fileDocuments = parseJsonl(await file.text(), file.name);
      els.passages.value = fileDocuments.join("\n");
      els.passages.readOnly = true; // the file's documents are sent as they are (newlines too)
      els.status.textContent = `Loaded ${fileDocuments.length} passages from ${file.name}. Clear the file to type passages.`;
      showError("");
    } catch (err) {
      fileDocuments = null;
      els.passages.readOnly = false;
      showError(err.message);
    }
    updateSnippet();
  }

  // Code snippets ------------------------------------------------------------------------------

  function shellQuote(text) {
    return `'${text.replace(/'/g, "'\\''")}'`;
  }

  function python(value, indent = "") {
    const inner = `${indent}    `;
    if (value === null) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") return String(value);
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return `[\n${value.map((v) => inner + python(v, inner)).join(",\n")},\n${indent}]`;
    }
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, inner)}`).join(",\n")},\n${indent}}`;
  }

  function snippet(kind) {
    const body = requestBody();
    const base = window.location.origin;
    if (kind === "json") return JSON.stringify(body, null, 2);
    if (kind === "curl") {
      const lines = [`curl -s -X POST ${shellQuote(`${base}/rerank`)}`, "-H 'Content-Type: application/json'"];
      if (apiKey()) lines.push('-H "Authorization: Bearer $RERANKD_API_KEY"');
      lines.push(`-d ${shellQuote(JSON.stringify(body))}`);
      return lines.join(" \\\n  ");
    }
    if (kind === "python") {
      const auth = apiKey() ? `\n    headers={"Authorization": f"Bearer {os.environ['RERANKD_API_KEY']}"},` : "";
      return [
        "import os", "", "import httpx", "",
        "response = httpx.post(",
        `    ${JSON.stringify(`${base}/rerank`)},`,
        `    json=${python(body, "    ")},${auth}`,
        "    timeout=60,",
        ")",
        "response.raise_for_status()",
        'for result in response.json()["results"]:',
        '    print(result["index"], round(result["score"], 4), result["document"])',
      ].join("\n");
    }
    const args = [`model=${python(body.model || "")}`, `query=${python(body.query)}`, `documents=${python(body.documents, "    ")}`];
    if (body.top_n) args.push(`top_n=${body.top_n}`);
    return [
      ...(body.instruction ? ["# The Cohere API has no instruction field: use the httpx version to send it."] : []),
      ...(body.return_spans ? ["# The cohere SDK does not send return_spans (a rerankd extension): use the httpx version."] : []),
      "import os", "", "import cohere", "",
      `co = cohere.ClientV2(api_key=os.environ.get("RERANKD_API_KEY", "none"), base_url=${JSON.stringify(base)})`,
      `response = co.rerank(\n${args.map((a) => `    ${a},`).join("\n")}\n)`,
      "for result in response.results:",
      "    print(result.index, round(result.relevance_score, 4))",
    ].join("\n");
  }

  function updateSnippet() {
    els.snippet.value = snippet(format);
  }

  function selectTab(tab, focus) {
    document.querySelectorAll('[role="tab"]').forEach((other) => {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
    });
    $("snippet-panel").setAttribute("aria-labelledby", tab.id);
    format = tab.dataset.format;
    updateSnippet();
    if (focus) tab.focus();
  }

  async function copySnippet() {
    const text = els.snippet.value;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // Not a secure context (plain http to another host): fall back to the selection.
      els.snippet.focus();
      els.snippet.select();
      document.execCommand("copy");
    }
    els.copyStatus.textContent = "Copied.";
    setTimeout(() => { els.copyStatus.textContent = ""; }, 3000);
  }

  // Wiring ---------------------------------------------------------------------------------------

  function useExample(name) {
    const example = EXAMPLES[name];
    els.jsonl.value = "";
    fileDocuments = null;
    els.passages.readOnly = false;
    els.query.value = example.query;
    els.passages.value = example.passages.join("\n");
    updateSnippet();
  }

  function init() {
    els.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    els.key.addEventListener("change", () => {
      if (apiKey()) sessionStorage.setItem(KEY_STORAGE, apiKey());
      else sessionStorage.removeItem(KEY_STORAGE);
      loadModels();
    });
    els.model.addEventListener("change", () => { updateInstruction(); updateSnippet(); });
    els.form.addEventListener("submit", rank);
    els.form.addEventListener("input", updateSnippet);
    els.form.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) els.form.requestSubmit();
    });
    els.jsonl.addEventListener("change", loadFile);
    document.querySelectorAll("[data-example]").forEach((button) => {
      button.addEventListener("click", () => useExample(button.dataset.example));
    });
    const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
    tabs.forEach((tab, i) => {
      tab.addEventListener("click", () => selectTab(tab, false));
      tab.addEventListener("keydown", (event) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
        if (step) selectTab(tabs[(i + step + tabs.length) % tabs.length], true);
        if (event.key === "Home") selectTab(tabs[0], true);
        if (event.key === "End") selectTab(tabs[tabs.length - 1], true);
      });
    });
    els.copy.addEventListener("click", copySnippet);
    useExample("english");
    loadModels();
  }

  init();
})();
