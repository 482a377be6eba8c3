// sipcast console: drives the REST API and follows /rest-api/events. No dependencies.
"use strict";

const STORE = "sipcast.console.startup";
const FIELDS = ["callId", "callee", "sipDomain", "sipPort", "sipOutboundProxy", "sipLogin",
  "sipAuthenticationName", "sipPassword", "rtmpUrl", "rtmpStream", "appKey", "toStream"];
const FLAGS = ["hasAudio", "hasVideo"];
const NOT_STORED = ["sipPassword"];
const FINAL = ["BUSY", "FAILED", "FINISH"];

const calls = new Map(); // callId -> call object (find_all shape or event shape)
const $ = (id) => document.getElementById(id);

function log(text) {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + "  " + text;
  const list = $("log");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

function show(id, ok, text) {
  const el = $(id);
  el.textContent = text;
  el.className = "result " + (ok ? "ok" : "bad");
}

async function api(path, body) {
  const init = body === undefined
    ? { method: "GET" }
    : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    return { status: 0, json: { error: "network error: " + e.message } };
  }
  let json = null;
  try { json = await response.json(); } catch (_) { json = null; }
  return { status: response.status, json };
}

function describe(reply) {
  if (reply.status === 200) return "OK";
  const error = reply.json && reply.json.error ? reply.json.error : "no answer";
  const field = reply.json && reply.json.field ? " [" + reply.json.field + "]" : "";
  return reply.status + ": " + error + field;
}

// ---- the startup form, remembered in localStorage (password excepted) ----

function formValues() {
  const values = {};
  for (const name of FIELDS) values[name] = $("f-" + name).value.trim();
  for (const name of FLAGS) values[name] = $("f-" + name).checked;
  return values;
}

function remember() {
  const values = formValues();
  for (const name of NOT_STORED) delete values[name];
  try { localStorage.setItem(STORE, JSON.stringify(values)); } catch (_) { /* storage off */ }
}

function restore() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (_) { saved = null; }
  if (saved && typeof saved === "object") {
    for (const name of FIELDS) {
      if (!NOT_STORED.includes(name) && typeof saved[name] === "string") $("f-" + name).value = saved[name];
    }
    for (const name of FLAGS) {
      if (typeof saved[name] === "boolean") $("f-" + name).checked = saved[name];
    }
  }
  if (!$("f-callId").value) newCallId();
}

function newCallId() {
  $("f-callId").value = "call-" + Math.random().toString(36).slice(2, 8);
  remember();
}

async function startCall(event) {
  event.preventDefault();
  remember();
  const values = formValues();
  const body = {};
  for (const [name, value] of Object.entries(values)) {
    if (typeof value === "boolean") body[name] = value;
    else if (value !== "") body[name] = name === "sipPort" && /^\d+$/.test(value) ? Number(value) : value;
  }
  const reply = await api("/rest-api/call/startup", body);
  show("start-result", reply.status === 200, "startup " + body.callId + ": " + describe(reply));
  log("call/startup " + body.callId + " -> " + describe(reply));
  if (reply.status === 200) {
    selectCall(body.callId);
    await refresh();
  }
}

// ---- the live call table ----

function isLive(call) { return !FINAL.includes(call.status); }

function apply(call) {
  const known = calls.get(call.callId);
  if (known && known.sequence && call.sequence && known.sequence > call.sequence) return;
  calls.set(call.callId, call);
}

async function refresh() {
  const reply = await api("/rest-api/call/find_all");
  if (reply.status === 200 && Array.isArray(reply.json)) {
    const seen = new Set();
    for (const call of reply.json) { seen.add(call.callId); apply(call); }
    for (const id of [...calls.keys()]) if (!seen.has(id)) calls.delete(id);
  } else if (reply.status === 404) {
    calls.clear();
  }
  render();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function render() {
  const rows = $("call-rows");
  rows.replaceChildren();
  const list = [...calls.values()];
  for (const call of list) {
    const tr = document.createElement("tr");
    tr.dataset.callId = call.callId;
    tr.dataset.testid = "call-row";
    if (!isLive(call)) tr.className = "final";
    cell(tr, call.callId);
    cell(tr, call.status, "status").dataset.field = "status";
    cell(tr, call.sipStatus).dataset.field = "sipStatus";
    cell(tr, call.rtmpStreamStatus).dataset.field = "rtmpStreamStatus";
    cell(tr, call.callee);
    cell(tr, (call.rtmpUrl || "") + " / " + (call.rtmpStream || ""));
    cell(tr, call.info);
    const td = cell(tr, "");
    const hangup = document.createElement("button");
    hangup.type = "button";
    hangup.className = "danger";
    hangup.textContent = "Hang up";
    hangup.dataset.action = "hangup";
    hangup.disabled = !isLive(call);
    hangup.addEventListener("click", () => hangUp(call.callId));
    td.appendChild(hangup);
    rows.appendChild(tr);
  }
  $("no-calls").hidden = list.length > 0;
  fillCallSelect($("dtmf-call"));
  fillCallSelect($("push-call"));
}

let selected = "";

function selectCall(callId) {
  selected = callId;
  fillCallSelect($("dtmf-call"));
  fillCallSelect($("push-call"));
}

function fillCallSelect(select) {
  const live = [...calls.values()].filter(isLive).map((c) => c.callId);
  const current = select.value || selected;
  select.replaceChildren();
  for (const id of live) {
    const option = document.createElement("option");
    option.value = id;
    option.textContent = id;
    select.appendChild(option);
  }
  if (live.includes(current)) select.value = current;
  else if (live.includes(selected)) select.value = selected;
}

async function hangUp(callId) {
  const reply = await api("/rest-api/call/terminate", { callId });
  log("call/terminate " + callId + " -> " + describe(reply));
  show("start-result", reply.status === 200, "terminate " + callId + ": " + describe(reply));
}

// ---- DTMF ----

async function sendDigit(digit) {
  const callId = $("dtmf-call").value;
  if (!callId) { show("dtmf-result", false, "no live call selected"); return; }
  const type = $("dtmf-type").value;
  const reply = await api("/rest-api/call/send_dtmf", { callId, dtmf: digit, type });
  show("dtmf-result", reply.status === 200, "DTMF " + digit + " (" + type + ") to " + callId + ": " + describe(reply));
  log("call/send_dtmf " + callId + " " + type + " -> " + describe(reply));
}

// ---- push targets ----

async function loadPushes() {
  const callId = $("push-call").value;
  const list = $("push-list");
  list.replaceChildren();
  if (!callId) return;
  const reply = await api("/rest-api/push/find", { callId });
  if (reply.status !== 200 || !Array.isArray(reply.json)) return;
  for (const push of reply.json) {
    const li = document.createElement("li");
    li.textContent = push.rtmpUrl + " / " + push.rtmpStream + " " + push.rtmpStreamStatus + (push.muted ? " (muted) " : " ");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => removePush(push.mediaSessionId));
    li.appendChild(remove);
    list.appendChild(li);
  }
}

async function addPush() {
  const callId = $("push-call").value;
  const rtmpUrl = $("push-url").value.trim();
  if (!callId) { show("push-result", false, "no live call selected"); return; }
  const reply = await api("/rest-api/push/startup", { callId, rtmpUrl });
  const id = reply.json && reply.json.mediaSessionId ? " mediaSessionId " + reply.json.mediaSessionId : "";
  show("push-result", reply.status === 200, "push/startup: " + describe(reply) + id);
  log("push/startup " + callId + " -> " + describe(reply));
  await loadPushes();
}

async function removePush(mediaSessionId) {
  const reply = await api("/rest-api/push/terminate", { mediaSessionId });
  show("push-result", reply.status === 200, "push/terminate: " + describe(reply));
  log("push/terminate " + mediaSessionId + " -> " + describe(reply));
  await loadPushes();
}

// ---- events ----

function connectEvents() {
  const state = $("sse-state");
  const source = new EventSource("/rest-api/events");
  source.addEventListener("open", () => {
    state.textContent = "events: live";
    state.className = "badge on";
    refresh();
  });
  source.addEventListener("error", () => {
    state.textContent = "events: reconnecting";
    state.className = "badge off";
  });
  source.addEventListener("call", (e) => {
    let event;
    try { event = JSON.parse(e.data); } catch (_) { return; }
    apply(event);
    log("event " + event.callId + " " + event.status + " " + (event.sipStatus ?? "") + " " + event.rtmpStreamStatus);
    render();
  });
  source.addEventListener("lagged", () => refresh());
}

document.addEventListener("DOMContentLoaded", () => {
  restore();
  $("startup-form").addEventListener("submit", startCall);
  $("startup-form").addEventListener("change", remember);
  $("new-call-id").addEventListener("click", newCallId);
  for (const key of document.querySelectorAll("#keypad button")) {
    key.addEventListener("click", () => sendDigit(key.dataset.digit));
  }
  $("push-add").addEventListener("click", addPush);
  $("push-call").addEventListener("change", loadPushes);
  refresh();
  connectEvents();
});
