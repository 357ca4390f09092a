// The playground chat: draws the transcript, follows it live (server-sent events), sends what a
// person types as them. Every element is built with textContent: nothing SignBridge or a person
// says is ever read as HTML.
"use strict";

const CHAT_ID = "g-playground";
const BUTTONS = { remind: "催签", cancel: "撤销", retry: "重试" };
const state = { people: [], entries: [], attached: [], last: 0, source: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

function me() { return $("as").value; }
function nameOf(id) { const p = state.people.find((x) => x.id === id); return p ? p.name : id; }

function answerNote(answer) {
  if (!answer) return null;
  const body = answer.body || {};
  if (answer.status === 202 && body.request_id) return `SignBridge 已受理 / accepted: ${body.request_id}`;
  if (answer.status === 200 && body.ignored) return null;
  if (answer.status >= 200 && answer.status < 300) return body.status ? `SignBridge: ${body.status}` : null;
  const error = body.error || {};
  if (answer.status === 503) return "SignBridge 暂时没有响应（503），请再发一次 / busy, send again";
  return `SignBridge 拒绝 / refused (${answer.status}): ${error.message || JSON.stringify(body)}`;
}

function said(entry) {
  const files = (entry.files || []).map((f) => el("li", { class: "file" }, `附件 / file: ${f.name}`));
  const note = answerNote(entry.answer);
  return el("li", { class: `msg ${entry.by === me() ? "mine" : ""}`, "data-seq": String(entry.seq) },
    el("span", { class: "author" }, nameOf(entry.by)),
    entry.text ? el("p", { class: "text" }, entry.text) : null,
    files.length ? el("ul", { class: "files" }, ...files) : null,
    note ? el("p", { class: "note" }, note) : null);
}

function pressed(entry) {
  const note = answerNote(entry.answer) || `SignBridge: ${(entry.answer.body || {}).status || "ok"}`;
  return el("li", { class: "system", "data-seq": String(entry.seq) },
    `${nameOf(entry.by)} 点了「${BUTTONS[entry.action] || entry.action}」 — ${note}`);
}

function card(body) {
  const c = body.card;
  const signers = c.signers.map((s) => el("li", { class: `signer ${s.state}` },
    `${s.group + 1}. ${s.name}${s.external ? "（外部）" : ""} — ${s.state_text}`));
  const buttons = c.buttons.map((b) => el("button", {
    type: "button", class: "action", onclick: () => pressButton(c.request_id, b.action),
  }, b.label));
  return el("li", { class: "card", "data-card": body.card_key, "data-status": c.status },
    el("span", { class: "author" }, "SignBridge"),
    el("h3", {}, c.title),
    el("p", { class: "card-status" }, c.status_text),
    c.document && c.document.name ? el("p", { class: "doc" }, `文件 / document: ${c.document.name}`) : null,
    el("ul", { class: "signers", "aria-label": "签署人 / signers" }, ...signers),
    c.note ? el("p", { class: "note" }, c.note) : null,
    buttons.length ? el("div", { class: "buttons" }, ...buttons) : null);
}

function botMessage(entry) {
  const body = entry.body;
  const parts = [el("span", { class: "author" }, "SignBridge"), el("p", { class: "text" }, body.text || "")];
  if (body.sign_url) {
    parts.push(el("a", {
      class: "open", href: `/playground/open/${entry.seq}?as=${encodeURIComponent(body.to)}`,
      target: "_blank", rel: "noopener",
    }, "打开签署页面 / Open the signing page"));
  }
  return el("li", { class: "msg bot", "data-seq": String(entry.seq) }, ...parts);
}

function fileMessage(entry) {
  const body = entry.body;
  return el("li", { class: "msg bot file-message", "data-seq": String(entry.seq) },
    el("span", { class: "author" }, "SignBridge"),
    el("a", { class: "download", href: body.url, download: body.name }, `文件 / file: ${body.name}`),
    el("p", { class: "hash" }, `SHA-256 ${body.sha256}`));
}

function render() {
  const transcript = $("transcript");
  const inbox = $("inbox");
  const cards = new Map();
  for (const entry of state.entries) {
    if (entry.kind === "outbound" && entry.body.type === "card.upsert") cards.set(entry.body.card_key, entry.body);
  }
  const placed = new Set();
  const chatItems = [];
  const inboxItems = [];
  const counts = {};
  for (const entry of state.entries) {
    if (entry.kind === "said") chatItems.push(said(entry));
    else if (entry.kind === "pressed") chatItems.push(pressed(entry));
    else if (entry.kind === "outbound") {
      const body = entry.body;
      if (body.type === "card.upsert" && !placed.has(body.card_key)) {
        placed.add(body.card_key);
        chatItems.push(card(cards.get(body.card_key)));
      } else if (body.type === "message" && body.to) {
        counts[body.to] = (counts[body.to] || 0) + 1;
        if (body.to === me()) inboxItems.push(botMessage(entry));
      } else if (body.type === "message") chatItems.push(botMessage(entry));
      else if (body.type === "file") chatItems.push(fileMessage(entry));
    }
  }
  transcript.replaceChildren(...chatItems);
  inbox.replaceChildren(...(inboxItems.length ? inboxItems : [el("li", { class: "empty" }, "（没有私信 / none）")]));
  for (const option of $("as").options) {
    const p = state.people.find((x) => x.id === option.value);
    const n = counts[option.value] || 0;
    option.textContent = `${p.name}（${p.role}）${n ? ` · ${n} 条私信` : ""}`;
  }
  $("me-name").textContent = nameOf(me());
  transcript.lastElementChild?.scrollIntoView({ block: "end" });
}

function add(entries) {
  for (const entry of entries) {
    if (entry.seq > state.last) {
      state.entries.push(entry);
      state.last = entry.seq;
    }
  }
  render();
}

function follow() {
  if (state.source) state.source.close();
  state.source = new EventSource(`/playground/api/stream?after=${state.last}`);
  state.source.addEventListener("entry", (event) => add([JSON.parse(event.data)]));
  // The server ends each stream after a few quiet seconds; the browser reconnects by itself,
  // resuming after the last entry it got (Last-Event-ID).
}

async function post(url, payload) {
  const resp = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
  return body;
}

function say(text) { $("status").textContent = text; }

async function attach(files) {
  for (const file of files) {
    say(`上传中 / uploading ${file.name}…`);
    const form = new FormData();
    form.append("file", file);
    const resp = await fetch("/playground/api/files", { method: "POST", body: form });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) { say(`上传失败 / upload failed: ${(body.error && body.error.message) || resp.status}`); return; }
    state.attached.push({ id: body.id, name: body.name });
  }
  $("attached").replaceChildren(...state.attached.map((f) => el("li", {}, `附件 / file: ${f.name}`)));
  say("");
}

async function send(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text && !state.attached.length) { say("写点什么，或拖入文件 / type something or drop a file"); return; }
  $("send").disabled = true;
  try {
    add([await post("/playground/api/say", { by: me(), text, files: state.attached })]);
    state.attached = [];
    $("attached").replaceChildren();
    $("file").value = "";
    $("text").value = "";
    say("");
  } catch (error) {
    say(`发送失败 / not sent: ${error.message}`);
  } finally {
    $("send").disabled = false;
  }
}

async function pressButton(requestId, action) {
  try {
    add([await post("/playground/api/press", { by: me(), request_id: requestId, action })]);
  } catch (error) {
    say(`操作失败 / failed: ${error.message}`);
  }
}

async function start() {
  const wanted = new URLSearchParams(location.search).get("as");
  if (wanted && [...$("as").options].some((o) => o.value === wanted)) $("as").value = wanted;
  $("as").addEventListener("change", () => {
    history.replaceState(null, "", `?as=${encodeURIComponent(me())}`);
    render();
  });
  $("composer").addEventListener("submit", send);
  $("file").addEventListener("change", () => attach($("file").files));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    attach(event.dataTransfer.files);
  });
  const resp = await fetch("/playground/api/state");
  const body = await resp.json();
  state.people = body.people;
  add(body.entries);
  follow();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
