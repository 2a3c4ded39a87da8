// The confab page: the host of the WebClient (the same SecureClient as the
// CLI, compiled to WebAssembly). The page supplies time (Date.now(),
// performance.now()), randomness (crypto.getRandomValues), the transport (a
// WebSocket to this server's /confab) and storage (IndexedDB, encrypted);
// everything the protocol and the cryptography do happens in the core.

import init, { WebClient } from "./pkg/confab_web.js";
import { ProfileStore } from "./store.js";
import { ask, button, message, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);
const seed = () => crypto.getRandomValues(new Uint8Array(32));
const clock = () => [Date.now(), performance.now()];

let wc = null; // the WebClient
let store = null; // the ProfileStore
let ws = null; // the WebSocket
let retry = 0;
let timer = null;
let flushing = false;
let again = false;
let leaving = false;
let pendingLogin = null; // { user, password, passphrase } between register and login
let records = new Map(); // account -> key record a logout left (its identity key under its password)
let loggingOut = false;
const requests = new Map(); // request id -> what the page asked, for its answer

// What the page shows (the machine holds the secrets; this holds the view).
const view = {
  me: null,
  active: null, // { kind: "room" | "dm", name }
  rooms: new Map(), // name -> { messages: [], members: [], unread }
  dms: new Map(), // peer -> { state, unread, offer } (the messages are the client's)
  warnings: new Map(), // user -> text
};

// ----- the loop: checkpoint, then frames, then events, then the timer -----

async function flush() {
  if (flushing) {
    again = true;
    return;
  }
  flushing = true;
  try {
    do {
      again = false;
      let bytes;
      while ((bytes = wc.take_checkpoint()) !== undefined) {
        if (!leaving) await store.save(bytes);
        wc.checkpoint_saved();
      }
      while (ws && ws.readyState === WebSocket.OPEN) {
        const frame = wc.poll_transmit();
        if (frame === undefined) break;
        ws.send(frame);
      }
      let ev;
      while ((ev = wc.poll_event()) !== undefined) onEvent(JSON.parse(ev));
      armTimer();
    } while (again);
  } catch (e) {
    toast(`storage failed: ${e}`);
  } finally {
    flushing = false;
  }
}

function armTimer() {
  clearTimeout(timer);
  const at = wc.poll_timeout();
  if (at === undefined) return;
  timer = setTimeout(() => {
    wc.handle_timeout(...clock());
    flush();
  }, Math.max(0, at - performance.now()));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/confab`, "confab.v1");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    retry = 0;
    setConn(true);
    wc.connected(...clock());
    flush();
  };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") return;
    wc.handle_input(...clock(), new Uint8Array(m.data));
    flush();
  };
  ws.onclose = () => {
    setConn(false);
    if (!wc) return;
    wc.disconnected(...clock());
    flush();
    if (leaving) return;
    const delay = Math.min(10000, 500 * 2 ** retry++);
    setTimeout(connect, delay);
  };
}

// ----- commands -----

function run(what, fn, context = {}) {
  try {
    const id = fn(...clock());
    requests.set(id, { what, ...context });
    flush();
    return id;
  } catch (e) {
    toast(`${what}: ${e.message ?? e}`);
    return undefined;
  }
}

async function start() {
  await init();
  store = await ProfileStore.open();
  if (await store.leaving()) {
    // A logout was under way when the page went: finish it.
    $("auth-status").textContent = "Logging out…";
    const bytes = await store.load();
    if (bytes) {
      try {
        wc = WebClient.restore(seed(), bytes, ...clock());
      } catch (e) {
        wc = null;
      }
      bytes.fill(0);
    }
    return logOut();
  }
  const bytes = await store.load();
  if (bytes) {
    try {
      wc = WebClient.restore(seed(), bytes, ...clock());
    } catch (e) {
      toast(`stored profile unreadable: ${e.message}`);
    }
    bytes.fill(0);
  }
  // A fresh key whose registration never succeeded is not worth keeping.
  if (wc && wc.owner() === undefined && !wc.is_logged_in()) wc = null;
  records = await store.records();
  if (wc && wc.is_logged_in()) {
    showApp();
  } else {
    showAuth();
    const last = await store.last();
    const who = wc?.owner() ?? (records.has(last) ? last : records.keys().next().value);
    if (who !== undefined) {
      $("tab-login").click();
      $("login-user").value = who;
      $("auth-status").textContent = `${who} is logged out on this browser: log in to continue.`;
    }
  }
  if (wc) connect();
}

// The page runs in one tab at a time: two tabs on one stored profile would
// each resume the session (a refresh token presented twice revokes the
// login), and the last to write would roll the other's keys back.
function startAlone() {
  if (!navigator.locks) {
    showAuth();
    $("register-form").hidden = true;
    $("login-form").hidden = true;
    $("auth-status").textContent =
      "This browser lacks Web Locks (navigator.locks), which confab needs to run in one tab at a time: use a current browser.";
    return undefined;
  }
  return navigator.locks.request("confab-profile", { ifAvailable: true }, (lock) => {
    if (!lock) {
      showAuth();
      $("register-form").hidden = true;
      $("login-form").hidden = true;
      $("auth-status").textContent =
        "confab is already open in another tab of this browser: use that tab, or close it and reload this one.";
      return undefined;
    }
    // Held for as long as the page lives.
    return start().then(() => new Promise(() => {}));
  });
}

// Makes `client` the page's client, on a connection of its own. A client
// it replaces that belongs to an account leaves that account's key record.
function adopt(client) {
  const owner = wc ? wc.owner() : undefined;
  const record = wc ? wc.logout_record() : undefined;
  if (owner !== undefined && record !== undefined && owner !== client.owner()) {
    records.set(owner, record);
    store.saveRecord(owner, record.slice()).catch((e) => toast(`storage failed: ${e}`));
  }
  if (ws) {
    const old = ws;
    ws = null;
    old.onopen = null;
    old.onclose = null;
    old.onmessage = null;
    old.close();
  }
  wc = client;
  connect();
}

function newClient() {
  if (!wc) {
    $("auth-status").textContent = "Making your identity key…";
    wc = new WebClient(seed(), ...clock());
    connect();
  }
}

// ----- events -----

function onEvent(e) {
  switch (e.type) {
    case "done":
      return onDone(e);
    case "failed":
      return onFailed(e);
    case "indeterminate":
      return toast(`${e.op}: no answer (${e.reason}); it is retried on reconnect`);
    case "logged_in":
      // A reload during a logout resumes the session only to end it.
      if (loggingOut) return;
      pendingLogin = null;
      return showApp();
    case "logged_out":
      return erase();
    case "state_reset":
      $("auth-status").textContent =
        `Your stored conversations could not be restored (${e.reason}); your identity key was kept: log in again.`;
      return;
    case "room": {
      const r = room(e.room);
      // Whoever writes in the room is a member (the server sends no joins).
      if (!r.members.includes(e.from)) r.members.push(e.from);
      if (r.messages.some((m) => m.seq === e.seq)) return render();
      // A message of mine shown when sent gets its place (seq) from the history.
      const mine = r.messages.find((m) => m.seq === null && m.from === e.from && m.text === e.text);
      if (mine) mine.seq = e.seq;
      else r.messages.push({ from: e.from, text: e.text, at: e.sent_ms, seq: e.seq });
      r.messages.sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
      if (!e.history && !isActive("room", e.room)) r.unread++;
      return render();
    }
    case "mp_offered": {
      const d = dm(e.from);
      d.state = "offered";
      d.offer = e.safety_number;
      if (!isActive("dm", e.from)) d.unread++;
      return render();
    }
    case "mp_ready":
      dm(e.peer).state = "ready";
      return render();
    case "mp": {
      const d = dm(e.from);
      d.state = "ready";
      if (!isActive("dm", e.from)) d.unread++;
      return render();
    }
    case "mp_closed":
      dm(e.peer).state = "closed";
      return render();
    case "mp_expired":
      toast(`a request or message to ${e.peer} expired on the server after one hour`);
      return render();
    case "mp_expired_locally":
      return render();
    case "key_changed":
      view.warnings.set(
        e.user,
        `${e.user}'s identity key changed (pinned ${e.pinned}, now ${e.presented}). ` +
          `Nothing is sent to or accepted from ${e.user} until you compare the new safety number and accept it.`,
      );
      return render();
    case "handshake_rejected":
      return toast(`conversation with ${e.peer} rejected: ${e.reason}`);
    case "decrypt_failed":
      return toast(`a message from ${e.from} did not open: ${e.reason}`);
    case "server_error":
      return toast(`server: ${e.reason}`);
    case "close":
      if (ws) ws.close();
      return;
    default:
      return;
  }
}

function onDone(e) {
  const req = requests.get(e.request_id) ?? {};
  requests.delete(e.request_id);
  if (e.op === "register" && pendingLogin) {
    const { user, password, passphrase } = pendingLogin;
    $("auth-status").textContent = "Account created. Logging in…";
    run("log in", (u, m) => wc.login(u, m, user, password, passphrase));
  } else if (e.op === "send_room" && req.msg && e.seq !== undefined) {
    // My message takes the place the server gave it (until then it shows last).
    const r = room(req.room);
    if (r.messages.some((m) => m !== req.msg && m.seq === e.seq)) r.messages = r.messages.filter((m) => m !== req.msg);
    else req.msg.seq = e.seq;
    r.messages.sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
    render();
  } else if (e.op === "join_room" && req.room) {
    room(req.room).members = e.members ?? [];
    select("room", req.room);
  } else if (e.op === "create_room" && req.room) {
    room(req.room).members = [view.me];
    select("room", req.room);
  } else if (e.op === "fetch_key" && req.user) {
    render();
  } else if (e.op === "logout") {
    erase();
  }
}

function onFailed(e) {
  const req = requests.get(e.request_id) ?? {};
  requests.delete(e.request_id);
  const text = `${req.what ?? e.op} failed (${e.code}): ${e.reason}`;
  if (!view.me) {
    $("auth-status").textContent = text;
    pendingLogin = null;
  } else {
    toast(text);
  }
  if (e.op === "logout") erase();
}

// ----- view state -----

function room(name) {
  if (!view.rooms.has(name)) view.rooms.set(name, { messages: [], members: [], unread: 0 });
  return view.rooms.get(name);
}

function dm(peer) {
  if (!view.dms.has(peer)) view.dms.set(peer, { state: "requested", unread: 0, offer: null });
  return view.dms.get(peer);
}

const isActive = (kind, name) => view.active && view.active.kind === kind && view.active.name === name;

function select(kind, name) {
  view.active = { kind, name };
  if (kind === "room") room(name).unread = 0;
  if (kind === "dm") dm(name).unread = 0;
  render();
  $("compose").focus();
}

// ----- screens -----

function showAuth() {
  $("app").hidden = true;
  $("auth").hidden = false;
  $("auth-status").textContent = "";
}

function showApp() {
  view.me = wc.username();
  $("auth").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = view.me;
  for (const r of JSON.parse(wc.rooms())) {
    if (!view.rooms.has(r)) {
      room(r);
      run("history", (u, m) => wc.room_history(u, m, r), { room: r });
    }
  }
  for (const p of JSON.parse(wc.conversations())) dm(p).state = "ready";
  for (const m of JSON.parse(wc.inbox())) dm(m.from).state = "ready";
  render();
}

function setConn(up) {
  $("conn").className = up ? "conn up" : "conn";
  $("conn").title = up ? "connected" : "reconnecting…";
}

function render() {
  if (!wc || !view.me) return;
  renderLists();
  const a = view.active;
  $("empty").hidden = !!a;
  $("composer").hidden = !a;
  $("messages").replaceChildren();
  $("chat-actions").replaceChildren();
  $("panel").hidden = true;
  $("warning").hidden = true;
  if (!a) {
    $("chat-title").textContent = `Hello, ${view.me}`;
    $("chat-sub").textContent = `Your key: ${wc.fingerprint()}`;
    return;
  }
  if (a.kind === "room") renderRoom(a.name);
  else renderDm(a.name);
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function renderLists() {
  const item = (kind, name, unread, extra) => {
    const li = document.createElement("li");
    li.className = isActive(kind, name) ? "active" : "";
    li.dataset.kind = kind;
    li.dataset.name = name;
    const label = document.createElement("span");
    label.textContent = (kind === "room" ? "# " : "") + name;
    li.append(label);
    if (extra) {
      const x = document.createElement("span");
      x.className = "tag";
      x.textContent = extra;
      li.append(x);
    }
    if (unread > 0) {
      const b = document.createElement("span");
      b.className = "badge";
      b.textContent = unread;
      li.append(b);
    }
    li.onclick = () => select(kind, name);
    return li;
  };
  $("room-list").replaceChildren(...[...view.rooms].map(([n, r]) => item("room", n, r.unread)));
  $("dm-list").replaceChildren(
    ...[...view.dms].map(([p, d]) => {
      const tag = { offered: "request", requested: "pending", closed: "closed" }[d.state];
      return item("dm", p, d.unread, view.warnings.has(p) ? "key changed" : tag);
    }),
  );
}

function renderRoom(name) {
  const r = room(name);
  $("chat-title").textContent = `# ${name}`;
  $("chat-sub").textContent = r.members.length ? `Members: ${r.members.join(", ")} (as you joined; others appear when they write)` : "Room, end-to-end encrypted";
  $("chat-actions").append(button("History", () => run("history", (u, m) => wc.room_history(u, m, name), { room: name }), "", "act-history"));
  $("messages").replaceChildren(...r.messages.map((m) => message(m.from, m.text, m.at, undefined, m.from === view.me)));
}

function renderDm(peer) {
  const d = dm(peer);
  const contact = JSON.parse(wc.contact(peer));
  $("chat-title").textContent = peer;
  const state = { ready: "Private conversation, end-to-end encrypted", offered: "Wants to talk with you",
    requested: "Request sent; waiting for them to accept", closed: "Conversation closed" }[d.state];
  $("chat-sub").textContent = `${state}${contact.verified ? " · verified ✓" : ""}`;
  const actions = $("chat-actions");
  actions.append(button("Safety number", () => showSafety(peer), "", "act-safety"));
  if (d.state === "offered") actions.append(button("Accept", () => run("accept", (u, m) => wc.accept_mp(u, m, peer), { peer }), "primary", "act-accept"));
  if (d.state === "closed") actions.append(button("New request", () => { d.state = "requested"; run("request", (u, m) => wc.request_mp(u, m, peer), { peer }); render(); }, "", "act-request"));
  if (d.state !== "closed") actions.append(button(d.state === "offered" ? "Refuse" : "Close", () => run("close", (u, m) => wc.close_mp(u, m, peer), { peer }), "", "act-close"));
  if (view.warnings.has(peer) || contact.key_changed) {
    $("warning").hidden = false;
    $("warning").textContent = view.warnings.get(peer) ?? `${peer}'s identity key changed: compare the safety number before you accept it.`;
  }
  const now = Date.now();
  const received = JSON.parse(wc.inbox())
    .filter((m) => m.from === peer)
    .map((m) => ({ from: peer, text: m.text, at: m.received_ms, note: `disappears in ${Math.max(1, Math.ceil((m.expires_ms - now) / 60000))} min` }));
  const sent = JSON.parse(wc.sent_mps(peer, now))
    .map((m) => ({ from: view.me, text: m.text, at: m.sent_ms, note: `disappears in ${Math.max(1, Math.ceil((m.expires_ms - now) / 60000))} min` }));
  const all = [...received, ...sent].sort((a, b) => a.at - b.at);
  $("messages").replaceChildren(...all.map((m) => message(m.from, m.text, m.at, m.note, m.from === view.me)));
  $("composer").hidden = d.state !== "ready";
}

function showSafety(peer) {
  const number = wc.safety_number(peer);
  const panel = $("panel");
  panel.hidden = false;
  panel.replaceChildren();
  if (!number) {
    panel.textContent = `Fetching ${peer}'s key…`;
    run("fetch key", (u, m) => wc.fetch_key(u, m, peer), { user: peer });
    setTimeout(() => isActive("dm", peer) && wc.safety_number(peer) && showSafety(peer), 300);
    return;
  }
  const contact = JSON.parse(wc.contact(peer));
  const h = document.createElement("p");
  h.textContent = `Safety number with ${peer} — compare it with theirs in person or on a call:`;
  const n = document.createElement("p");
  n.className = "safety";
  n.id = "safety-number";
  n.textContent = number;
  panel.append(h, n);
  if (contact.key_changed) {
    panel.append(button(`Accept ${peer}'s new key`, () => { wc.accept_new_key(peer); view.warnings.delete(peer); flush(); render(); }, "danger", "act-accept-key"));
  } else if (contact.verified) {
    const ok = document.createElement("p");
    ok.className = "verified";
    ok.textContent = "Verified ✓";
    panel.append(ok);
  } else {
    panel.append(button("Mark as verified", () => { try { wc.verify(peer); flush(); render(); showSafety(peer); } catch (e) { toast(e.message); } }, "primary", "act-verify"));
  }
}

// ----- forms and dialogs -----

// Logout: the session is revoked on the server (when it can be reached
// within 5 s), then the store is replaced, in one transaction, by the key
// records (each account's identity key encrypted under its password, as the
// CLI keeps it) under a new wrapping key: the profile, the old wrapping key
// and the view go, and this account can log in here again. The "leaving"
// mark makes a reload in between finish the logout instead of bringing the
// profile back.
async function logOut() {
  loggingOut = true;
  await store.markLeaving();
  if (wc && wc.is_logged_in()) {
    if (!ws) connect();
    run("log out", (u, m) => wc.logout(u, m));
    setTimeout(erase, 5000);
  } else {
    erase();
  }
}

let erasing = false;
async function erase() {
  if (erasing) return;
  erasing = true;
  leaving = true;
  clearTimeout(timer);
  if (ws) ws.close();
  const keep = await store.records();
  const owner = wc ? wc.owner() : undefined;
  const record = wc ? wc.logout_record() : undefined;
  if (owner !== undefined && record !== undefined) keep.set(owner, record);
  wc = null;
  await store.resetTo(keep, owner);
  location.reload();
}

function wire() {
  $("tab-register").onclick = () => {
    $("tab-register").classList.add("active");
    $("tab-login").classList.remove("active");
    $("register-form").hidden = false;
    $("login-form").hidden = true;
  };
  $("tab-login").onclick = () => {
    $("tab-login").classList.add("active");
    $("tab-register").classList.remove("active");
    $("register-form").hidden = true;
    $("login-form").hidden = false;
  };
  $("register-form").onsubmit = (ev) => {
    ev.preventDefault();
    newClient();
    const user = $("reg-user").value.trim();
    const password = $("reg-pass").value;
    const passphrase = $("reg-phrase").value.trim();
    $("auth-status").textContent = "Creating your account…";
    try {
      const id = wc.register(...clock(), user, password, passphrase);
      requests.set(id, { what: "register" });
      pendingLogin = { user, password, passphrase };
      flush();
    } catch (e) {
      // Refused before sending (this browser's key already belongs to an account).
      $("auth-status").textContent = e.message ?? String(e);
    }
  };
  $("login-next").onclick = () => {
    if (!$("login-user").value.trim() || !$("login-pass").value) return;
    $("login-step1").hidden = true;
    $("login-step2").hidden = false;
    $("login-phrase").focus();
  };
  $("login-form").onsubmit = (ev) => {
    ev.preventDefault();
    const user = $("login-user").value.trim();
    const password = $("login-pass").value;
    let client = wc && wc.owner() === user ? wc : null;
    if (!client && records.has(user)) {
      $("auth-status").textContent = "Unlocking your identity key…";
      try {
        client = WebClient.unlock(seed(), records.get(user), password, ...clock());
      } catch (e) {
        $("auth-status").textContent = e.message ?? String(e);
        return;
      }
    }
    const refuse = (text) => {
      $("auth-status").textContent = text;
      $("login-step2").hidden = true;
      $("login-step1").hidden = false;
    };
    // No key for this account here: nothing is sent.
    if (!client) return refuse(WebClient.no_identity(user));
    let id;
    try {
      id = client.login(...clock(), user, password, $("login-phrase").value.trim());
    } catch (e) {
      return refuse(e.message ?? String(e));
    }
    if (client !== wc) adopt(client);
    $("auth-status").textContent = "Logging in…";
    requests.set(id, { what: "log in" });
    flush();
  };
  $("new-room").onclick = async () => {
    const r = await ask(
      "Create or join a room",
      [
        { name: "room", label: "Room name" },
        { name: "password", label: "Room password", type: "password" },
      ],
      [
        { value: "join", label: "Join" },
        { value: "create", label: "Create" },
      ],
    );
    if (!r) return;
    const { room: name, password } = r.values;
    if (r.action === "create") run("create room", (u, m) => wc.create_room(u, m, name, password), { room: name });
    else run("join room", (u, m) => wc.join_room(u, m, name, password), { room: name });
  };
  $("new-dm").onclick = async () => {
    const r = await ask("Start a private conversation", [{ name: "peer", label: "Username" }], [
      { value: "request", label: "Send request" },
    ]);
    if (!r) return;
    const peer = r.values.peer;
    dm(peer).state = "requested";
    run("request", (u, m) => wc.request_mp(u, m, peer), { peer });
    select("dm", peer);
  };
  $("composer").onsubmit = (ev) => {
    ev.preventDefault();
    const text = $("compose").value;
    const a = view.active;
    if (!text || !a) return;
    if (a.kind === "room") {
      const msg = { from: view.me, text, at: Date.now(), seq: null };
      if (run("send", (u, m) => wc.send_room(u, m, a.name, text), { room: a.name, msg }) !== undefined) {
        room(a.name).messages.push(msg);
        $("compose").value = "";
        render();
      }
    } else if (run("send", (u, m) => wc.send_mp(u, m, a.name, text), { peer: a.name }) !== undefined) {
      $("compose").value = "";
      render();
    }
  };
  $("logout").onclick = () => logOut();
  setInterval(() => view.active && view.active.kind === "dm" && render(), 30000);
}

wire();
startAlone();
