// SEM playground: asks the service's OpenAI-compatible chat endpoint (streamed) and lays out the trace as it comes.
// Everything from the model or the corpus is inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let modelId = null;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The API key (when the service asks for one) stays in this tab only.
function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorMessage(response) {
  // The service answers errors with OpenAI's error object; anything else is shown by its status.
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
    if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) { /* not JSON */ }
  return `the service answered ${response.status} ${response.statusText}`;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (response.status === 401) {
      $("model").textContent = `This service needs an API key: ${await errorMessage(response)}`;
      return; // asked again when a key is entered
    }
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    // Every served model (the default first): the base, SEM's adapter, the world's adapter... each with its examples
    const select = $("model-select");
    select.replaceChildren(...body.data.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.parent ? `${m.id} (adapter)` : m.id;
      return option;
    }));
    modelId = body.data[0].id;
    showModel();
  } catch (err) {
    $("model").textContent = `Model not ready yet (${err.message}); retrying…`;
    setTimeout(loadModel, 3000);
  }
}

function showModel() {
  $("model").textContent = `Model: ${modelId}`;
  loadExamples(modelId);
}

// The decision a `confidence` answer took: its closed-book answer, that answer's confidence against the threshold,
// and so whether it searched.
function showDecision(card, news) {
  if (!news || news.confidence === undefined || news.confidence === null) return;
  const searched = news.confidence < news.confidence_threshold;
  const text = `first answer ${JSON.stringify(news.first_answer || "")} · confidence ${news.confidence.toFixed(2)} ` +
    `${searched ? "<" : "≥"} threshold ${Number(news.confidence_threshold).toFixed(2)} → ` +
    (searched ? "searched" : "answered without search");
  const badge = el("div", `decision ${searched ? "searched" : "answered"}`, text);
  card.querySelector(".status").after(badge);
}

function newRun(policy) {
  const card = $("run-template").content.firstElementChild.cloneNode(true);
  card.dataset.policy = policy;
  card.querySelector(".policy").textContent = policy;
  $("runs").append(card);
  return card;
}

function searchItem(record) {
  const item = el("li", "search");
  const label = record.client ? "search (run by you)" : record.forced ? "search (forced by policy)" : "search";
  item.append(el("div", "label", label));
  const query = el("div", "query", record.query);
  query.append(el("span", "badge", `${record.latency_ms.toFixed(1)} ms`));
  query.append(el("span", "badge", record.cached ? "cached" : "not cached"));
  if (record.error) query.append(el("span", "badge", `error: ${record.error}`));
  if (record.dropped) query.append(el("span", "badge filtered", `${record.dropped} filtered out`));
  item.append(query);
  const details = el("details");
  details.append(el("summary", "", `${record.passages.length} passage${record.passages.length === 1 ? "" : "s"}`));
  for (const p of record.passages) {
    const passage = el("div", "passage");
    passage.dataset.id = p.id; // what a citation names (its url, or the id of a passage without one)
    const score = p.score === null || p.score === undefined ? "" : `  (score ${p.score.toFixed(2)})`;
    passage.append(el("b", "", p.title + score), el("span", "", p.text));
    details.append(passage);
  }
  item.append(details);
  return item;
}

// Citations (OpenAI's url_citation annotations, on the finishing chunk): list the sources under the answer, and
// highlight each cited passage in the trace, with the answer's words marked where they are in it.
function showCitations(card, annotations) {
  const answer = card.querySelector(".answer").textContent;
  card.querySelector(".citations")?.remove(); // a later round's answer replaces the earlier one's sources
  const list = el("ol", "citations");
  list.setAttribute("aria-label", "Sources");
  for (const { url_citation: c } of annotations) {
    const item = el("li");
    const source = /^https?:\/\//.test(c.url) ? el("a", "", c.title) : el("span", "", c.title);
    if (source.tagName === "A") source.href = c.url;
    item.append(source);
    list.append(item);
    const cited = answer.slice(c.start_index, c.end_index);
    for (const passage of card.querySelectorAll(".passage")) {
      if (passage.dataset.id !== c.url) continue;
      passage.classList.add("cited");
      passage.closest("details").open = true;
      markWords(passage.querySelector("span"), cited);
    }
  }
  card.querySelector(".answer").after(list);
}

function markWords(span, text) {
  const words = text.match(/[\p{L}\p{N}]+/gu) || [];
  if (!words.length || span.querySelector("mark")) return;
  const found = new RegExp(words.join("[^\\p{L}\\p{N}]+"), "iu").exec(span.textContent);
  if (!found) return; // a sentence answer cited on its words: the whole passage is highlighted instead
  const body = span.textContent;
  const mark = el("mark", "", found[0]);
  span.replaceChildren(body.slice(0, found.index), mark, body.slice(found.index + found[0].length));
}

// Parses an SSE body into JSON payloads; stops at [DONE].
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// "I search": the service hands the search over as an OpenAI tool call; you paste what your search found.
const SEARCH_TOOL = {
  type: "function",
  function: { name: "search", parameters: { type: "object", properties: { query: { type: "string" } } } },
};
const TOOL_CHOICE = { never: "none", always: "required" };

function toolCallItem(card, call, conversation, answerSoFar, policy, maxSearches) {
  const item = el("li", "client-search");
  item.append(el("div", "label", "the model asks you to search"));
  item.append(el("div", "query", JSON.parse(call.function.arguments || "{}").query || ""));
  const box = el("textarea", "tool-result");
  box.rows = 3;
  box.placeholder = "Paste what your search found";
  box.setAttribute("aria-label", "Your search result");
  const send = el("button", "send-result", "Send result");
  send.type = "button";
  send.addEventListener("click", async () => {
    send.disabled = true;
    item.remove(); // the round comes back from the service as a search of the trace
    const messages = [...conversation, { role: "assistant", content: answerSoFar || null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: box.value }];
    card.querySelector(".answer").textContent = "";
    await running(() => ask(card, messages, policy, maxSearches, true));
  });
  item.append(box, send);
  return item;
}

async function ask(card, question, policy, maxSearches, clientSearch = $("client-search").checked) {
  const conversation = typeof question === "string" ? [{ role: "user", content: question }] : question;
  const call = { id: null, type: "function", function: { name: "", arguments: "" } };
  const status = card.querySelector(".status");
  const answer = card.querySelector(".answer");
  const trace = card.querySelector(".trace");
  const meta = card.querySelector(".meta");
  let thinking = null;
  const started = performance.now();
  let firstToken = null;
  status.textContent = "asking…";
  const fail = (message) => {
    card.classList.add("failed");
    answer.textContent = message;
    status.textContent = "failed";
    showError(message);
  };
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({
        model: modelId || "default",
        messages: conversation,
        stream: true,
        stream_options: { include_usage: true },
        sem: { search: policy, max_searches: maxSearches, ...searchDomains(), ...searchRate(policy) },
        ...(clientSearch ? { tools: [SEARCH_TOOL], tool_choice: TOOL_CHOICE[policy] || "auto" } : {}),
      }),
    });
  } catch (err) {
    return fail(`Cannot reach the service: ${err.message}`);
  }
  showBudget(response.headers);
  if (!response.ok) return fail(await errorMessage(response));
  try {
    for await (const chunk of sseEvents(response)) {
      if (chunk.sem && chunk.sem.search_budget_exhausted) {  // answered without search: say so on the card
        card.classList.add("budget-exhausted");
        status.before(el("span", "badge budget", "search budget spent: answered without search"));
      }
      if (chunk.error) return fail(chunk.error.message);
      if (chunk.sem) showDecision(card, chunk.sem);
      if (firstToken === null) firstToken = performance.now();
      if (chunk.search_results) {
        for (const record of chunk.search_results) trace.append(searchItem(record));
        thinking = null; // the model's next words go in a fresh block after the passages
      }
      const choice = chunk.choices && chunk.choices[0];
      const delta = choice ? choice.delta : {};
      if (delta.reasoning_content && !chunk.search_results) {
        if (!thinking) {
          const item = el("li", "thinking");
          item.append(el("div", "label", "model"));
          thinking = el("pre");
          item.append(thinking);
          trace.append(item);
        }
        thinking.textContent += delta.reasoning_content;
      }
      if (delta.content) answer.textContent += delta.content;
      if (delta.annotations) showCitations(card, delta.annotations);
      for (const piece of delta.tool_calls || []) {  // OpenAI's pieces: id and name first, then the arguments
        if (piece.id) call.id = piece.id;
        if (piece.function && piece.function.name) call.function.name = piece.function.name;
        if (piece.function && piece.function.arguments) call.function.arguments += piece.function.arguments;
      }
      if (choice && choice.finish_reason) status.textContent = `done (${choice.finish_reason})`;
      if (chunk.usage) {
        const u = chunk.usage;
        const seconds = ((performance.now() - started) / 1000).toFixed(2);
        card.dataset.searches = String(u.num_search_queries);
        meta.textContent = `${u.num_search_queries} search${u.num_search_queries === 1 ? "" : "es"} · ${seconds} s · ` +
          `${u.prompt_tokens} prompt + ${u.completion_tokens} completion tokens`;
      }
    }
  } catch (err) {
    return fail(`The stream broke off: ${err.message}`);
  }
  if (call.id) {  // the model wants a search: yours
    status.textContent = "waiting for your search";
    trace.append(toolCallItem(card, call, conversation, answer.textContent, policy, maxSearches));
    return;
  }
  if (!answer.textContent) answer.textContent = "(no answer)";
  card.classList.add("done");
}

// The search-rate dial: the `confidence` gate searches this share of questions, the least sure (other policies
// decide otherwise, so the rate is not sent with them).
function searchRate(policy) {
  const rate = $("search-rate").value.trim();
  return rate !== "" && policy === "confidence" ? { search_rate: Number(rate) } : {};
}

// The source filter (sem.search_domains): comma-separated domains; the service checks each one (a 422 names it).
function searchDomains() {
  const list = (id) => $(id).value.split(",").map((d) => d.trim()).filter(Boolean);
  const allow = list("allow-domains");
  const block = list("block-domains");
  return allow.length || block.length ? { search_domains: { allow, block } } : {};
}

// What is left of the search budget: the answer's headers, or GET /v1/budget between answers.
function showBudget(headers) {
  const left = headers.get("x-sem-search-budget-remaining");
  const reset = headers.get("x-sem-search-budget-reset");
  if (left !== null) $("stat-budget").textContent = `${left} (resets in ${formatSeconds(Number(reset))})`;
}

function formatSeconds(s) {
  if (s >= 86400) return `${(s / 86400).toFixed(1)} d`;
  if (s >= 3600) return `${(s / 3600).toFixed(1)} h`;
  return s >= 60 ? `${Math.ceil(s / 60)} min` : `${s} s`;
}

async function refreshBudget() {
  try {
    const response = await fetch("/v1/budget", { headers: authHeaders() });
    if (!response.ok) return;
    const b = await response.json();
    if (!b.enabled) { $("stat-budget").textContent = "no budget"; return; }
    const tightest = b.limits.reduce((a, x) => (a === null || x.left < a.left ? x : a), null);
    $("stat-budget").textContent = tightest
      ? `${b.left} (${tightest.scope} per ${tightest.window}, resets in ${formatSeconds(tightest.reset_s)})` : "-";
  } catch (_) { /* a nicety, like the counters */ }
}

function readForm() {
  const question = $("question").value.trim();
  const maxSearches = Number.parseInt($("max-searches").value, 10);
  if (!question) {
    showError("Type a question first.");
    $("question").focus();
    return null;
  }
  if (Number.isNaN(maxSearches) || maxSearches < 0) {
    showError("Max searches must be a whole number, 0 or more.");
    $("max-searches").focus();
    return null;
  }
  showError("");
  return { question, maxSearches };
}

async function running(work) {
  const buttons = [$("ask-button"), $("compare-button")];
  buttons.forEach((b) => { b.disabled = true; });
  try { await work(); } finally {
    buttons.forEach((b) => { b.disabled = false; });
    refreshStats();
  }
}

async function onAsk(event) {
  event.preventDefault();
  const form = readForm();
  if (!form) return;
  $("runs").replaceChildren();
  const policy = $("policy").value;
  await running(() => ask(newRun(policy), form.question, policy, form.maxSearches));
}

async function onCompare() {
  const form = readForm();
  if (!form) return;
  $("runs").replaceChildren();
  const cards = ["auto", "always", "never"].map((policy) => [policy, newRun(policy)]);
  cards.forEach(([, card]) => { card.querySelector(".status").textContent = "waiting…"; });
  // One after another, so that each latency is measured alone and the three are comparable.
  await running(async () => {
    for (const [policy, card] of cards) await ask(card, form.question, policy, form.maxSearches);
  });
}

async function refreshStats() {
  try {
    const response = await fetch("/v1/stats", { headers: authHeaders() });
    if (!response.ok) return;
    const s = await response.json();
    const pct = (x) => (x === null ? "-" : `${(100 * x).toFixed(0)} %`);
    $("stat-answers").textContent = String(s.answers);
    $("stat-spa").textContent = s.searches_per_answer === null ? "-" : s.searches_per_answer.toFixed(2);
    $("stat-hit").textContent = pct(s.cache_hit_rate);
    $("stat-latency").textContent = s.mean_latency_ms === null ? "-" : `${(s.mean_latency_ms / 1000).toFixed(2)} s`;
    $("stat-rate").textContent = s.search_rate_achieved == null ? "-" : pct(s.search_rate_achieved);
  } catch (_) { /* the counters are a nicety: a failed poll is retried on the next tick */ }
  refreshBudget();
}

// Example questions (a served world's known and unknown entities, or a few real ones): a click fills the question.
async function loadExamples(model) {
  try {
    const response = await fetch(`/playground/examples${model ? `?model=${encodeURIComponent(model)}` : ""}`);
    if (!response.ok) return;
    $("examples").replaceChildren();
    for (const example of await response.json()) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "example";
      chip.textContent = example.question;
      chip.title = example.note;
      chip.addEventListener("click", () => { $("question").value = example.question; $("question").focus(); });
      $("examples").append(chip);
    }
  } catch (_) { /* examples are a nicety: the form works without them */ }
}

document.addEventListener("DOMContentLoaded", () => {
  $("ask").addEventListener("submit", onAsk);
  $("compare-button").addEventListener("click", onCompare);
  const savedKey = sessionStorage.getItem("sem-api-key");
  if (savedKey) $("api-key").value = savedKey;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("sem-api-key", $("api-key").value.trim());
    loadModel();
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask").requestSubmit();
  });
  $("model-select").addEventListener("change", (event) => { modelId = event.target.value; showModel(); });
  loadModel();
  loadExamples();  // the deployment's, until the models are known
  refreshStats();
  setInterval(refreshStats, 5000);
});
