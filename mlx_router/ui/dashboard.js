// mlx-router dashboard: polls the server's JSON endpoints and streams chats; no framework, no build step.
// Every text from the server or a model goes into the page as text (textContent), never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "mlx-router.api-key";
  const POLL_MS = 1000;
  const LOG_POLL_MS = 2000;
  const MODELS_POLL_MS = 30000; // new model folders; a change of a loaded model's state refetches at once
  const LOG_LINES = 500;

  const $ = (id) => document.getElementById(id);
  const state = {
    key: localStorage.getItem(KEY_STORAGE) || "",
    cards: [], // /v1/models
    slots: new Map(), // id -> the model's entry in /v1/health
    slotStates: "", // the slots' ids and states at the last poll: when they change, the model list is refetched
    pending: new Set(), // ids with a load or unload on its way
    logAfter: 0,
    history: [], // the playground's conversation, as sent to the server
    abort: null, // the running chat's AbortController
  };

  // ---- talking to the server -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (state.key) headers.Authorization = "Bearer " + state.key;
    return headers;
  }

  async function errorMessage(res) {
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) {
      /* not JSON: fall back to the status line */
    }
    return `${res.status} ${res.statusText}`;
  }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = authHeaders(opts.headers);
    const res = await fetch(path, opts);
    if (res.status === 401) {
      askForKey(await errorMessage(res));
      throw new ApiError(401, "this server needs an API key");
    }
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    return res.json();
  }

  function askForKey(message) {
    $("key-form").hidden = false;
    $("forget-key").hidden = true;
    showError(state.key ? `The API key was refused (${message}).` : "This server needs an API key: enter it above.");
  }

  // source: "poll" for what polling finds (cleared by the next good poll), "action" for a failed button press
  function showError(text, source) {
    $("error").textContent = text;
    $("error").hidden = !text;
    $("error").dataset.source = source || "poll";
  }

  // ---- formatting ------------------------------------------------------------------------------------------

  function gb(x) {
    if (x === null || x === undefined) return "–";
    return x >= 1 ? `${Number(x).toFixed(2)} GB` : `${Math.round(x * 1024)} MB`;
  }
  const num = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"));

  function setBadge(el, text) {
    el.textContent = text;
    el.className = "badge " + String(text).replace(/[^a-z_-]/gi, "");
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- health, activity, memory ----------------------------------------------------------------------------

  function renderHealth(h) {
    setBadge($("status"), h.status);
    $("version").textContent = `v${h.version}`;
    let running = 0;
    let queued = 0;
    state.slots = new Map();
    for (const m of h.models) {
      running += m.running;
      queued += m.queued;
      state.slots.set(m.id, m);
    }
    $("running").textContent = num(running);
    $("queued").textContent = num(queued);
    $("in-flight").textContent = num(h.requests_in_flight);
    $("waiting-engine").textContent = num(h.requests_waiting_for_engine);
    const mem = h.memory;
    setBadge($("pressure"), mem.pressure);
    $("mem-bar").style.width = `${Math.min(100, mem.used_percent)}%`;
    const used = mem.total_gb - mem.available_gb;
    $("mem-used").textContent = `${used.toFixed(1)} of ${mem.total_gb.toFixed(1)} GB (${mem.used_percent.toFixed(0)}%)`;
    $("mem-mlx").textContent = `${gb(mem.mlx_active_gb)} / ${gb(mem.mlx_cache_gb)}`;
    $("mem-peak").textContent = gb(mem.mlx_peak_gb);
    $("mem-budget").textContent = gb(mem.budget_gb);
    $("mem-swap").textContent = `${Number(mem.swap_percent).toFixed(0)}%`;
    $("engine").textContent = `${h.engine_state}${h.engine_pid ? ` (pid ${h.engine_pid})` : ""}, ${h.engine_restarts} restarts`;
    const slotStates = h.models.map((m) => `${m.id}:${m.state}`).join(" ");
    if (slotStates !== state.slotStates) {
      state.slotStates = slotStates;
      refreshModels(); // a model loaded, unloaded or evicted (by anyone): its row follows
    }
    renderModels();
  }

  function renderActivity(a) {
    $("tps").textContent = a.tokens_per_second.toFixed(1);
    $("requests-total").textContent = num(a.requests);
    $("completion-tokens").textContent = num(a.completion_tokens);
    $("prompt-tokens").textContent = `${num(a.prompt_tokens)} (${num(a.cached_tokens)})`;
    const outcomes = Object.entries(a.outcomes).map(([k, v]) => `${k} ${v}`);
    $("outcomes").textContent = outcomes.length ? outcomes.join(", ") : "–";
    const series = a.tokens_per_second_series;
    const top = Math.max(1, ...series);
    const step = 120 / Math.max(1, series.length - 1);
    const points = series.map((v, i) => `${(i * step).toFixed(1)},${(29 - (v / top) * 28).toFixed(1)}`);
    $("spark-line").setAttribute("points", points.join(" "));
    $("spark").setAttribute("aria-label", `tokens per second, last ${a.series_window_s} s, peak ${top}`);
  }

  async function pollStatus() {
    try {
      const [health, activity] = await Promise.all([api("/v1/health"), api("/v1/dashboard/activity")]);
      renderHealth(health);
      renderActivity(activity);
      if (!$("key-form").hidden && state.key) hideKeyForm();
      if ($("error").dataset.source === "poll") showError("");
    } catch (e) {
      if (e.status !== 401) showError(e instanceof ApiError ? e.message : `The server does not answer (${e.message}).`);
      setBadge($("status"), e.status === 401 ? "locked" : "unreachable");
    } finally {
      setTimeout(pollStatus, POLL_MS);
    }
  }

  // ---- models ----------------------------------------------------------------------------------------------

  async function refreshModels() {
    try {
      state.cards = (await api("/v1/models")).data;
      renderModels();
      fillModelChoice();
    } catch (_) {
      /* pollStatus reports what is wrong */
    }
  }

  async function pollModels() {
    await refreshModels();
    setTimeout(pollModels, MODELS_POLL_MS);
  }

  function modelRow(id) {
    const rows = $("models");
    for (const row of rows.children) if (row.dataset.model === id) return row;
    const row = el("tr");
    row.dataset.model = id;
    row.append(el("td", "", id), el("td"), el("td", "num"), el("td", "num"), el("td", "num"), el("td", "muted"), el("td"));
    const button = el("button");
    button.type = "button";
    button.addEventListener("click", () => toggleModel(id, button.dataset.action));
    row.lastChild.append(button);
    rows.append(row);
    return row;
  }

  function renderModels() {
    const ids = new Set();
    for (const card of state.cards) {
      ids.add(card.id);
      const slot = state.slots.get(card.id);
      const modelState = slot ? slot.state : card.state;
      const cells = modelRow(card.id).children;
      cells[1].replaceChildren();
      const badge = el("span");
      setBadge(badge, modelState);
      cells[1].append(badge);
      if (slot && slot.error) cells[1].append(" ", el("span", "error", slot.error));
      cells[2].textContent = slot && slot.memory_gb ? gb(slot.memory_gb) : `~${gb(card.memory_estimate_gb)}`;
      cells[2].title = slot ? `KV reserved ${gb(slot.kv_reserved_gb)}, KV cache ${gb(slot.kv_cache_gb)}` : "estimate";
      cells[3].textContent = slot ? num(slot.running) : "0";
      cells[4].textContent = slot ? num(slot.queued) : "0";
      const kind = card.type === "embeddings" ? " · embeddings" : card.supports_vision ? " · vision" : "";
      cells[5].textContent = (card.source || "") + kind;
      const button = cells[6].firstChild;
      const loaded = modelState === "ready";
      button.dataset.action = loaded ? "unload" : "load";
      button.textContent = state.pending.has(card.id) ? "…" : loaded ? "Unload" : "Load";
      button.disabled = state.pending.has(card.id) || modelState === "loading" || modelState === "unloading";
      button.setAttribute("aria-label", `${loaded ? "unload" : "load"} ${card.id}`);
    }
    for (const row of [...$("models").children]) if (!ids.has(row.dataset.model)) row.remove();
  }

  async function toggleModel(id, action) {
    state.pending.add(id);
    renderModels();
    const path = `/v1/models/${encodeURIComponent(id).replace(/%2F/g, "/")}`;
    try {
      await api(action === "unload" ? path : `${path}/load`, { method: action === "unload" ? "DELETE" : "POST" });
      if ($("error").dataset.source === "action") showError("");
    } catch (e) {
      showError(`Could not ${action} ${id}: ${e.message}`, "action");
    } finally {
      state.pending.delete(id);
      await refreshModels();
    }
  }

  function fillModelChoice() {
    const select = $("chat-model");
    const chosen = select.value;
    const chats = state.cards.filter((c) => c.type !== "embeddings"); // the playground chats
    const ids = chats.map((c) => c.id);
    if ([...select.options].map((o) => o.value).join("\n") === ids.join("\n")) return;
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    const ready = chats.find((c) => c.state === "ready");
    select.value = ids.includes(chosen) ? chosen : ready ? ready.id : ids[0] || "";
  }

  // ---- recent log ------------------------------------------------------------------------------------------

  async function pollLog() {
    try {
      const page = await api(`/v1/dashboard/logs?after=${state.logAfter}`);
      const box = $("log");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
      for (const r of page.data) {
        const line = el("div", r.level);
        const time = el("time", "", new Date(r.time * 1000).toLocaleTimeString());
        line.append(time, `${r.level} ${r.logger}: ${r.message}`);
        box.append(line);
      }
      while (box.children.length > LOG_LINES) box.firstChild.remove();
      if (atBottom) box.scrollTop = box.scrollHeight;
      state.logAfter = page.last;
    } catch (_) {
      /* pollStatus reports what is wrong */
    } finally {
      setTimeout(pollLog, LOG_POLL_MS);
    }
  }

  // ---- the key ---------------------------------------------------------------------------------------------

  function hideKeyForm() {
    $("key-form").hidden = true;
    $("forget-key").hidden = !state.key;
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("api-key").value.trim();
    localStorage.setItem(KEY_STORAGE, state.key);
    $("api-key").value = "";
    hideKeyForm();
    showError("");
    refreshModels();
  });

  $("forget-key").addEventListener("click", () => {
    state.key = "";
    localStorage.removeItem(KEY_STORAGE);
    $("forget-key").hidden = true;
  });

  // ---- playground ------------------------------------------------------------------------------------------

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function userContent(text) {
    const file = $("chat-file").files[0];
    if (!file) return text;
    const uri = await readFile(file);
    const isPdf = file.type === "application/pdf" || /\.pdf$/i.test(file.name);
    const part = isPdf
      ? { type: "file", file: { file_data: uri, filename: file.name } }
      : { type: "image_url", image_url: { url: uri } };
    return [{ type: "text", text }, part];
  }

  function addMessage(role) {
    const msg = el("div", `msg ${role}`);
    msg.append(el("span", "who", role));
    $("transcript").append(msg);
    return msg;
  }

  function showUser(text, content) {
    const msg = addMessage("user");
    msg.append(el("span", "text", text));
    if (Array.isArray(content)) {
      const file = $("chat-file").files[0];
      msg.append(el("div", "attachment", `attached: ${file.name} (${Math.round(file.size / 1024)} kB)`));
    }
  }

  function assistantView() {
    const msg = addMessage("assistant");
    const view = {
      reasoning: el("div", "reasoning"),
      content: el("div", "content"),
      calls: el("div", "tool-calls"),
      error: el("div", "error"),
    };
    view.reasoning.dataset.testid = "reasoning";
    view.content.dataset.testid = "answer";
    view.calls.dataset.testid = "tool-calls";
    msg.append(view.reasoning, view.content, view.calls, view.error);
    return view;
  }

  function parseTools() {
    const text = $("chat-tools").value.trim();
    if (!text) return null;
    const tools = JSON.parse(text); // a SyntaxError is shown to the user as it is
    if (!Array.isArray(tools)) throw new Error("tools must be a JSON list");
    return tools;
  }

  // Reads an SSE body and calls onData with each `data:` payload but [DONE].
  async function readEvents(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart())
          .join("\n");
        if (data && data !== "[DONE]") onData(JSON.parse(data));
      }
    }
  }

  function renderCalls(view, calls) {
    view.calls.replaceChildren(
      ...calls.map((c) => el("div", "tool-call", `${c.name}(${c.arguments})`)),
    );
  }

  async function sendChat(text) {
    const tools = parseTools();
    const content = await userContent(text);
    showUser(text, content);
    state.history.push({ role: "user", content });
    $("chat-file").value = "";
    const system = $("chat-system").value.trim();
    const body = {
      model: $("chat-model").value,
      messages: (system ? [{ role: "system", content: system }] : []).concat(state.history),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: Number($("chat-max").value) || undefined,
      temperature: Number($("chat-temp").value),
    };
    if (tools) body.tools = tools;
    const view = assistantView();
    const reply = { content: "", reasoning: "", calls: [], finish: null, usage: null, firstAt: null };
    const started = performance.now();
    state.abort = new AbortController();
    try {
      const res = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
        signal: state.abort.signal,
      });
      if (res.status === 401) askForKey(await errorMessage(res));
      if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
      await readEvents(res.body, (chunk) => onChunk(chunk, reply, view));
    } catch (e) {
      view.error.textContent = e.name === "AbortError" ? "stopped" : e.message;
      if (e.name === "AbortError") reply.finish = "stopped";
    } finally {
      state.abort = null;
    }
    showStats(reply, started);
    if (!reply.content && !reply.calls.length) {
      state.history.pop(); // nothing came back: the turn is not kept, so the next message is not refused for it
      return;
    }
    const message = { role: "assistant", content: reply.content || null };
    if (reply.calls.length) {
      message.tool_calls = reply.calls.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: c.arguments },
      }));
    }
    state.history.push(message);
  }

  function onChunk(chunk, reply, view) {
    if (chunk.error) {
      view.error.textContent = chunk.error.message;
      return;
    }
    if (chunk.usage) reply.usage = chunk.usage;
    const choice = chunk.choices && chunk.choices[0];
    if (!choice) return;
    const delta = choice.delta || {};
    if (reply.firstAt === null && (delta.content || delta.reasoning_content || delta.tool_calls)) {
      reply.firstAt = performance.now();
    }
    if (delta.reasoning_content) {
      reply.reasoning += delta.reasoning_content;
      view.reasoning.textContent = reply.reasoning;
    }
    if (delta.content) {
      reply.content += delta.content;
      view.content.textContent = reply.content;
    }
    for (const call of delta.tool_calls || []) {
      const slot = (reply.calls[call.index] = reply.calls[call.index] || { id: "", name: "", arguments: "" });
      if (call.id) slot.id = call.id;
      if (call.function && call.function.name) slot.name += call.function.name;
      if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
      renderCalls(view, reply.calls);
    }
    if (choice.finish_reason) reply.finish = choice.finish_reason;
    const box = $("transcript");
    box.scrollTop = box.scrollHeight;
  }

  function showStats(reply, started) {
    const parts = [];
    if (reply.finish) parts.push(`finish: ${reply.finish}`);
    if (reply.firstAt !== null) parts.push(`first token ${((reply.firstAt - started) / 1000).toFixed(2)} s`);
    const u = reply.usage;
    if (u) {
      const cached = (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) || 0;
      parts.push(`prompt ${u.prompt_tokens} tokens (${cached} cached), completion ${u.completion_tokens}`);
      // as the browser saw it (network and rendering included); too short a stream gives no useful rate
      const seconds = (performance.now() - (reply.firstAt || started)) / 1000;
      if (seconds >= 0.25) parts.push(`${(u.completion_tokens / seconds).toFixed(1)} tok/s`);
    }
    $("chat-stats").textContent = parts.join(" · ");
  }

  $("chat-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text || state.abort) return;
    $("chat-input").value = "";
    $("chat-send").disabled = true;
    $("chat-stop").disabled = false;
    $("chat-stats").textContent = "";
    try {
      await sendChat(text);
    } catch (e) {
      // before the request went out: bad tools JSON, an unreadable file
      const view = assistantView();
      view.error.textContent = e.message;
    } finally {
      $("chat-send").disabled = false;
      $("chat-stop").disabled = true;
    }
  });

  $("chat-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("chat-form").requestSubmit();
    }
  });

  $("chat-stop").addEventListener("click", () => state.abort && state.abort.abort());

  $("chat-clear").addEventListener("click", () => {
    if (state.abort) state.abort.abort();
    state.history = [];
    $("transcript").replaceChildren();
    $("chat-stats").textContent = "";
  });

  // ---- start -----------------------------------------------------------------------------------------------

  hideKeyForm();
  pollStatus();
  pollModels();
  pollLog();
})();
