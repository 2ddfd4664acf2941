// textenv labeling page. Model text is untrusted: it is only ever inserted with textContent.
"use strict";
let csrf = null;
let current = null;
let busy = false;

const $ = (id) => document.getElementById(id);
function show(id) { for (const s of ["login", "work", "done"]) $(s).hidden = s !== id; }

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, { method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { const err = new Error(data.detail || res.statusText); err.status = res.status; throw err; }
  return data;
}

function render(q) {
  current = q;
  $("instructions").textContent = q.instructions;
  $("query").textContent = q.query;
  const what = /summar/i.test(q.task) ? "summary" : "continuation";
  $("ask").textContent = `Which ${what} is best? (click, or press 1-${q.samples.length}; s skips, f flags)`;
  const list = $("samples");
  list.replaceChildren();
  q.samples.forEach((text, i) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.choice = String(i);
    button.textContent = text;
    button.addEventListener("click", () => submit("choose", i));
    li.appendChild(button);
    list.appendChild(li);
  });
  $("progress").textContent = `answered ${q.progress.answered}, ${q.progress.pending_questions} questions pending`;
  $("status").textContent = "";
  show("work");
}

// The session expired, was ended (logout elsewhere) or the token was revoked: ask for the token again.
function sessionEnded(message) {
  csrf = null;
  current = null;
  $("who").textContent = "";
  $("progress").textContent = "";
  $("login-error").textContent = `Please log in again (${message})`;
  show("login");
  $("token").focus();
}

async function loadNext() {
  const q = await api("GET", "/api/next");
  if (q.done) { current = null; show("done"); return; }
  render(q);
}

async function submit(action, choice) {
  if (!current || busy) return;
  busy = true;
  $("status").textContent = "saving...";
  try {
    const body = { id: current.id, action };
    if (action === "choose") body.choice = choice;
    await api("POST", "/api/answers", body);   // acknowledged only after the commit
    await loadNext();
  } catch (err) {
    if (err.status === 401) { sessionEnded(err.message); return; }
    $("status").textContent = `not saved: ${err.message}`;
    if (err.status === 409) await loadNext();
  } finally { busy = false; }
}

document.addEventListener("keydown", (e) => {
  if ($("work").hidden || e.target.tagName === "INPUT") return;
  if (e.key >= "1" && e.key <= "9" && current && Number(e.key) <= current.samples.length) submit("choose", Number(e.key) - 1);
  else if (e.key === "s") submit("skip");
  else if (e.key === "f") submit("flag");
});

async function start(me) {
  csrf = me.csrf;
  $("who").textContent = `labeler: ${me.labeler}`;
  await loadNext();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("skip").addEventListener("click", () => submit("skip"));
  $("flag").addEventListener("click", () => submit("flag"));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const me = await api("POST", "/api/login", { token: $("token").value });
      $("token").value = "";
      $("login-error").textContent = "";
      await start(me);
    } catch (err) { $("login-error").textContent = err.message; }
  });
  try { await start(await api("GET", "/api/me")); } catch (err) { show("login"); }
});
