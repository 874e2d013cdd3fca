// The nane chat client: plain JavaScript, no build step, no dependencies.
//
// Every accepted message reaches every connection, whatever the room, our own
// included. So the client keeps every room it hears about, counts unread
// messages in rooms it is not showing, and treats its own echo as the
// acknowledgement of what it sent. What is not acknowledged stays in `unsent`
// (kept in sessionStorage, so a reload keeps it too) and is sent again after a
// reconnect, unless the server shows it already has it: the client `id`
// travels with the message, in the echo, in a replay and in /history alike.
//
// Reconnecting costs no HTTP request: the socket asks with `since` for every
// message after the last position it saw (?v=2 messages carry `pos`) and the
// server replays them, then says `{"pos", "replayed"}` and goes live. Only when
// the server answers `{"gone"}` (it restarted, or no longer keeps them) does
// the client read the room list and histories again, and say so on the page.
//
// Everything a user typed is put on the page with textContent, never as HTML;
// names through names.js (naneNames), which shows hidden characters and isolates each name.
"use strict";

(() => {
  const DEFAULT_LIMITS = {
    max_message_length: 10500,
    max_room_title_length: 50,
    max_username_length: 50,
    max_messages_in_room: 1024,
  };
  const PING_EVERY_MS = 10000; // our keep-alive: {"ping": true}
  const PONG_TIMEOUT_MS = 5000; // no pong by then: the connection is dead
  const OPEN_TIMEOUT_MS = 10000; // a websocket that has not opened by then is given up
  const FETCH_TIMEOUT_MS = 10000;
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const RESTART_TOLERANCE_MS = 1000; // server start time moving more than this = a restart
  const NAME_KEY = "nane.username"; // localStorage: remembered across visits
  const UNSENT_KEY = "nane.unsent"; // sessionStorage: per tab, so two tabs never both resend

  const $ = (id) => document.getElementById(id);

  const state = {
    username: "",
    limits: { ...DEFAULT_LIMITS },
    serverStartedAt: null, // ms since epoch, from /api/settings uptime
    rooms: new Map(), // folded name -> Room
    openKey: null, // folded name of the room on screen
    openName: null, // its spelling: the server's if the room exists, else as typed
    unsent: loadUnsent(), // [{id, room, text}], oldest first
    failed: [], // [{id, room, text, error}] refused by the server (error frames)
    socket: null,
    ready: false, // socket open and caught up: new messages go straight out
    attempt: 0, // reconnect attempts since the last good connection
    everConnected: false,
    position: null, // the last position the server gave us: where a reconnect resumes
    retryAt: 0,
    timers: { retry: 0, countdown: 0, ping: 0, pong: 0, open: 0 },
  };

  // ---- small helpers ------------------------------------------------------

  // The server counts characters (code points), not UTF-16 units.
  const chars = (s) => Array.from(s).length;
  const cut = (s, n) => Array.from(s).slice(0, n).join("");
  const fold = (name) => name.toLowerCase();

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID(); // only on https and localhost
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function loadUnsent() {
    try {
      const list = JSON.parse(sessionStorage.getItem(UNSENT_KEY) || "[]");
      return Array.isArray(list)
        ? list.filter((u) => u && typeof u.id === "string" && typeof u.room === "string" && typeof u.text === "string")
        : [];
    } catch {
      return [];
    }
  }

  function saveUnsent() {
    try {
      sessionStorage.setItem(UNSENT_KEY, JSON.stringify(state.unsent));
    } catch {
      // storage full or disabled: the messages still live in memory
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // `created` has nanoseconds; Date wants at most milliseconds.
  function parseCreated(created) {
    const d = new Date(created.replace(/(\.\d{3})\d*Z$/, "$1Z"));
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function formatTime(created) {
    const d = parseCreated(created);
    if (!d) return "";
    const now = new Date();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (d.toDateString() === now.toDateString()) return time;
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  async function api(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const response = await fetch(path, { signal: ctl.signal, cache: "no-store" });
      const body = await response.json();
      if (body && typeof body.error === "string") {
        const err = new Error(body.error);
        err.status = response.status;
        throw err;
      }
      return body.result;
    } finally {
      clearTimeout(timer);
    }
  }

  const roomPath = (name) => "/api/rooms/" + encodeURIComponent(name);

  function isMessage(m) {
    return (
      m && typeof m === "object" &&
      typeof m.room === "string" && typeof m.text === "string" && typeof m.created === "string" &&
      m.sender && typeof m.sender.username === "string"
    );
  }

  // ---- the model ----------------------------------------------------------

  function roomFor(name) {
    const key = fold(name);
    let room = state.rooms.get(key);
    if (!room) {
      room = { key, name, last: null, messages: new Map(), loaded: false, unread: 0 };
      state.rooms.set(key, room);
    }
    return room;
  }

  // Forget the first unsent message with this id; true if there was one.
  function takeUnsent(id) {
    const i = state.unsent.findIndex((u) => u.id === id);
    if (i < 0) return false;
    state.unsent.splice(i, 1);
    saveUnsent();
    return true;
  }

  // Take in one message, from the socket or from /history. Returns true when
  // it was new to us. `countUnread` says whether a new message may count as
  // unread (live ones and those missed while disconnected; not first loads).
  function receive(m, countUnread) {
    const room = roomFor(m.room);
    room.name = m.room; // the server's first-seen spelling
    const mine = typeof m.id === "string" && m.id !== "" && takeUnsent(m.id);
    if (room.messages.has(m.created)) return false;
    room.messages.set(m.created, m);
    trimRoom(room);
    if (!room.last || m.created > room.last.created) room.last = m;
    if (mine) updateStatus();
    if (countUnread && !mine && room.key !== state.openKey) room.unread += 1;
    if (room.key === state.openKey) {
      state.openName = room.name;
      showMessage(room, m, mine);
    }
    scheduleRender();
    return true;
  }

  // The server keeps only the last max_messages_in_room; so do we.
  function trimRoom(room) {
    const limit = state.limits.max_messages_in_room;
    if (room.messages.size <= limit + 64) return;
    const keys = Array.from(room.messages.keys()).sort();
    for (const k of keys.slice(0, keys.length - limit)) room.messages.delete(k);
    if (room.key === state.openKey) renderRoom();
  }

  async function loadHistory(room, countUnread) {
    let history;
    try {
      history = await api(roomPath(room.name) + "/history");
    } catch (err) {
      if (err.status === 404) {
        room.loaded = true;
        if (room.key === state.openKey) renderRoom();
        return;
      }
      throw err;
    }
    const before = room.last ? room.last.created : "";
    for (const m of Array.isArray(history) ? history : []) {
      if (isMessage(m)) receive(m, countUnread && m.created > before);
    }
    room.loaded = true;
    if (room.key === state.openKey) renderRoom();
  }

  function applySettings(settings) {
    for (const key of Object.keys(DEFAULT_LIMITS)) {
      if (Number.isInteger(settings[key]) && settings[key] > 0) state.limits[key] = settings[key];
    }
    updateCounters();
    if (!Number.isInteger(settings.uptime) && typeof settings.uptime !== "number") return;
    const startedAt = Date.now() - settings.uptime / 1e6;
    if (state.serverStartedAt !== null && Math.abs(startedAt - state.serverStartedAt) > RESTART_TOLERANCE_MS) {
      // A restarted server has forgotten everything; so do we (but not `unsent`).
      state.rooms.clear();
      renderRoom();
    }
    state.serverStartedAt = startedAt;
  }

  // After (re)connecting: take the room list, catch up on rooms that moved
  // while we were away, and learn which unsent messages the server already has.
  async function catchUp() {
    const [settings, rooms] = await Promise.all([api("/api/settings"), api("/api/rooms")]);
    applySettings(settings || {});
    const listed = Array.isArray(rooms) ? rooms.filter((r) => r && isMessage(r.last_message)) : [];
    const toLoad = new Map();
    for (const r of listed) {
      const known = state.rooms.get(fold(r.name));
      if (known && known.last && r.last_message.created > known.last.created) toLoad.set(known.key, known);
      const room = roomFor(r.name);
      room.name = r.name;
      if (!room.last || r.last_message.created > room.last.created) room.last = r.last_message;
    }
    for (const u of state.unsent) toLoad.set(fold(u.room), roomFor(u.room));
    if (state.openKey) toLoad.set(state.openKey, roomFor(state.openName));
    for (const room of toLoad.values()) {
      await loadHistory(room, room.loaded);
    }
    scheduleRender();
  }

  // ---- the connection -----------------------------------------------------

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // v=2: ask for positions and error frames about dropped messages (SPEC part 2);
    // since: resume after the last position ("" on the first connect: just tell us ours).
    const since = encodeURIComponent(state.position || "");
    return `${scheme}//${location.host}/ws?username=${encodeURIComponent(state.username)}&v=2&since=${since}`;
  }

  function connect() {
    clearTimers();
    setStatus(state.everConnected ? "reconnecting" : "connecting",
      state.everConnected ? "Reconnecting…" : "Connecting…");
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    state.socket = ws;
    state.ready = false;
    state.timers.open = setTimeout(() => drop(ws), OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      if (state.socket !== ws) return;
      clearTimeout(state.timers.open);
      setStatus("syncing", "Catching up…");
      startPing(ws);
      if (state.position === null) {
        resync(ws); // a first connect: nothing to resume from
      } else {
        // the server replays what we missed, then `{"pos", "replayed"}` (or `{"gone"}`)
        state.timers.open = setTimeout(() => drop(ws), OPEN_TIMEOUT_MS);
      }
    };
    ws.onmessage = (event) => {
      if (state.socket === ws) onFrame(event.data);
    };
    ws.onclose = () => {
      if (state.socket === ws) drop(ws);
    };
  }

  // Read the room list and histories over HTTP, then go live.
  function resync(ws) {
    catchUp().then(
      () => ready(ws),
      () => drop(ws),
    );
  }

  function ready(ws) {
    if (state.socket !== ws) return;
    clearTimeout(state.timers.open);
    state.ready = true;
    state.everConnected = true;
    state.attempt = 0;
    for (const u of state.unsent) sendFrame(u);
    updateStatus();
  }

  function sendFrame(u) {
    if (!state.ready || !state.socket || state.socket.readyState !== WebSocket.OPEN) return;
    state.socket.send(JSON.stringify({ room: u.room, text: u.text, id: u.id }));
  }

  // Let go of a socket (dead, closed, or stuck) and try again later.
  function drop(ws) {
    if (state.socket !== ws) return;
    state.socket = null;
    state.ready = false;
    try {
      ws.close();
    } catch {
      // already closing
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimers();
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt) * (0.75 + Math.random() * 0.25);
    state.attempt += 1;
    state.retryAt = Date.now() + delay;
    state.timers.retry = setTimeout(connect, delay);
    state.timers.countdown = setInterval(updateStatus, 1000);
    updateStatus();
  }

  function clearTimers() {
    clearTimeout(state.timers.retry);
    clearInterval(state.timers.countdown);
    clearInterval(state.timers.ping);
    clearTimeout(state.timers.pong);
    clearTimeout(state.timers.open);
  }

  function disconnect() {
    const ws = state.socket;
    state.socket = null;
    state.ready = false;
    clearTimers();
    if (ws) ws.close();
    setStatus("idle", "Not connected");
  }

  function startPing(ws) {
    state.timers.ping = setInterval(() => {
      if (state.socket !== ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ ping: true }));
      clearTimeout(state.timers.pong);
      state.timers.pong = setTimeout(() => drop(ws), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.pong === true) {
      clearTimeout(state.timers.pong);
      return;
    }
    if (typeof frame.error === "string") {
      onRefused(frame);
      return;
    }
    const resuming = state.position !== null && !state.ready && state.socket !== null;
    if (typeof frame.pos === "string") state.position = frame.pos;
    if (typeof frame.gone === "string") {
      showNotice(`Messages sent while you were away could not all be replayed (${frame.gone}); ` +
        "the rooms were reloaded instead.");
      if (resuming) resync(state.socket);
      return;
    }
    if (Number.isInteger(frame.replayed)) {
      if (resuming) ready(state.socket);
      return;
    }
    if (isMessage(frame)) receive(frame, true);
  }

  function showNotice(text) {
    $("notice-text").textContent = text;
    $("notice").hidden = false;
  }

  // An error frame (we opted in with v=2): the server dropped a message of ours.
  function onRefused(frame) {
    if (typeof frame.id !== "string") return;
    const u = state.unsent.find((x) => x.id === frame.id);
    if (!u) return;
    takeUnsent(u.id);
    state.failed.push({ ...u, error: frame.error });
    if (fold(u.room) === state.openKey) renderRoom();
    updateStatus();
  }

  // ---- posting ------------------------------------------------------------

  function post(text) {
    text = cut(text.trim(), state.limits.max_message_length);
    if (!text || !state.openName) return false;
    const u = { id: newId(), room: state.openName, text };
    state.unsent.push(u);
    saveUnsent();
    showPending(u);
    sendFrame(u);
    updateStatus();
    return true;
  }

  // ---- rendering ----------------------------------------------------------

  function setStatus(kind, text) {
    const status = $("status");
    status.dataset.state = kind;
    status.textContent = text;
    $("retry").hidden = !(kind === "reconnecting" && !state.socket);
  }

  function updateStatus() {
    const n = state.unsent.length;
    const unsent = n ? ` · ${n} unsent` : "";
    if (state.ready) {
      setStatus("online", "Connected" + unsent);
    } else if (!state.socket && state.retryAt) {
      const seconds = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      const what = state.everConnected ? "Connection lost" : "Cannot connect";
      setStatus("reconnecting", `${what}: reconnecting in ${seconds} s${unsent}`);
    }
    renderUnsentMarks();
  }

  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => {
      renderPending = false;
      renderRooms();
    });
  }

  function sortedRooms() {
    return Array.from(state.rooms.values())
      .filter((r) => r.last)
      .sort((a, b) => (a.last.created < b.last.created ? 1 : a.last.created > b.last.created ? -1 : 0));
  }

  function renderRooms() {
    const list = $("rooms");
    const rooms = sortedRooms();
    const items = rooms.map((room) => {
      const li = el("li", "room-item");
      li.dataset.room = room.name;
      if (room.key === state.openKey) li.classList.add("open");
      const button = el("button", "room-button");
      button.type = "button";
      button.addEventListener("click", () => openRoom(room.name));
      const top = el("span", "room-top");
      top.append(naneNames.node(room.name, "room-name"));
      const time = el("time", "room-time", formatTime(room.last.created));
      time.dateTime = room.last.created;
      top.append(time);
      const bottom = el("span", "room-bottom");
      const last = el("span", "room-last");
      const sender = el("span", "room-last-sender");
      sender.append(naneNames.node(room.last.sender.username), ": ");
      last.append(sender, el("bdi", "", room.last.text));
      bottom.append(last);
      if (room.unread > 0) {
        const badge = el("span", "badge", String(room.unread));
        badge.setAttribute("aria-label", `${room.unread} unread`);
        bottom.append(badge);
      }
      button.append(top, bottom);
      li.append(button);
      return li;
    });
    list.replaceChildren(...items);
    $("rooms-empty").hidden = rooms.length > 0;
    const unread = rooms.reduce((sum, r) => sum + r.unread, 0);
    document.title = (unread ? `(${unread}) ` : "") +
      (state.openName ? `${naneNames.isolated(state.openName)} · nane` : "nane");
  }

  function messageElement(m) {
    const li = el("li", "msg");
    if (m.sender.username === state.username) li.classList.add("mine");
    li.dataset.created = m.created;
    const meta = el("div", "meta");
    meta.append(naneNames.node(m.sender.username, "sender"));
    const time = el("time", "time", formatTime(m.created));
    time.dateTime = m.created;
    time.title = m.created;
    meta.append(time);
    li.append(meta, textElement(m.text));
    return li;
  }

  // A message's text in its own direction (dir=auto isolates it): an override inside stays inside.
  function textElement(text) {
    const node = el("div", "text", text);
    node.dir = "auto";
    return node;
  }

  function pendingElement(u, error) {
    const li = el("li", "msg mine pending");
    li.dataset.id = u.id;
    const meta = el("div", "meta");
    meta.append(naneNames.node(state.username, "sender"));
    meta.append(el("span", "state", error ? `not sent: ${error}` : "sending…"));
    if (error) li.classList.add("failed");
    li.append(meta, textElement(u.text));
    return li;
  }

  const nearBottom = (node) => node.scrollHeight - node.scrollTop - node.clientHeight < 80;

  function renderRoom() {
    const key = state.openKey;
    const room = key ? state.rooms.get(key) : null;
    const list = $("messages");
    $("room-title").replaceChildren(key ? naneNames.node(state.openName) : "Pick a room");
    $("room-placeholder").hidden = Boolean(key);
    $("composer").hidden = !key;
    $("room-new").hidden = !(key && room && room.loaded && room.messages.size === 0);
    $("chat").dataset.view = key ? "room" : "list";
    if (!key) {
      list.replaceChildren();
      return;
    }
    const messages = room ? Array.from(room.messages.values()).sort((a, b) => (a.created < b.created ? -1 : 1)) : [];
    const nodes = messages.map(messageElement);
    for (const u of state.unsent) if (fold(u.room) === key) nodes.push(pendingElement(u));
    for (const f of state.failed) if (fold(f.room) === key) nodes.push(pendingElement(f, f.error));
    list.replaceChildren(...nodes);
    list.scrollTop = list.scrollHeight;
  }

  // A new message in the open room: append it (or redraw when out of order).
  function showMessage(room, m, mine) {
    const list = $("messages");
    const stick = mine || nearBottom(list);
    if (mine) {
      const pending = list.querySelector(`.pending[data-id="${CSS.escape(m.id)}"]`);
      if (pending) pending.remove();
    }
    const confirmed = list.querySelectorAll(".msg:not(.pending)");
    const lastShown = confirmed.length ? confirmed[confirmed.length - 1].dataset.created : "";
    if (m.created > lastShown) {
      list.insertBefore(messageElement(m), list.querySelector(".pending"));
    } else {
      renderRoom();
    }
    $("room-new").hidden = true;
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function showPending(u) {
    const list = $("messages");
    list.append(pendingElement(u));
    $("room-new").hidden = true;
    list.scrollTop = list.scrollHeight;
  }

  // Pending messages say "waiting for connection" while we are offline.
  function renderUnsentMarks() {
    for (const node of $("messages").querySelectorAll(".pending:not(.failed) .state")) {
      node.textContent = state.ready ? "sending…" : "waiting for connection…";
    }
  }

  function openRoom(name) {
    name = cut(name.trim(), state.limits.max_room_title_length);
    if (!name) return;
    const target = "#" + encodeURIComponent(name);
    if (location.hash !== target) {
      location.hash = target; // hashchange shows it; Back on a phone returns to the list
    } else {
      showRoomFromHash();
    }
  }

  function showRoomFromHash() {
    let name = "";
    try {
      name = decodeURIComponent(location.hash.slice(1));
    } catch {
      name = "";
    }
    name = cut(name.trim(), state.limits.max_room_title_length);
    if (!name) {
      state.openKey = null;
      state.openName = null;
      renderRoom();
      scheduleRender();
      return;
    }
    const room = roomFor(name);
    state.openKey = room.key;
    state.openName = room.name;
    room.unread = 0;
    renderRoom();
    scheduleRender();
    if (!room.loaded && state.ready) {
      loadHistory(room, false).catch(() => {
        // offline: catchUp loads it after the reconnect
      });
    }
    if (window.matchMedia("(min-width: 720px)").matches) $("text").focus();
  }

  // ---- counters -----------------------------------------------------------

  function counter(input, output, limit, submit) {
    const n = chars(input.value.trim());
    output.textContent = `${n}/${limit}`;
    const over = n > limit;
    output.classList.toggle("over", over);
    if (submit) submit.disabled = over || n === 0;
  }

  function updateCounters() {
    const l = state.limits;
    counter($("username"), $("username-counter"), l.max_username_length, $("login-submit"));
    counter($("new-room"), $("new-room-counter"), l.max_room_title_length, $("new-room-submit"));
    counter($("text"), $("text-counter"), l.max_message_length, $("send"));
  }

  // ---- screens ------------------------------------------------------------

  function showLogin() {
    disconnect();
    $("chat").hidden = true;
    $("login").hidden = false;
    $("me").hidden = true;
    $("username").value = state.username;
    updateCounters();
    $("username").focus();
  }

  function showChat() {
    $("login").hidden = true;
    $("chat").hidden = false;
    $("me").hidden = false;
    $("me").replaceChildren(naneNames.node(state.username), " ✎");
    showRoomFromHash();
    connect();
  }

  function wire() {
    for (const id of ["username", "new-room", "text"]) $(id).addEventListener("input", updateCounters);

    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("username").value.trim();
      if (!name || chars(name) > state.limits.max_username_length) return;
      state.username = name;
      try {
        localStorage.setItem(NAME_KEY, name);
      } catch {
        // private mode: remembered for this visit only
      }
      showChat();
    });

    $("me").addEventListener("click", showLogin);
    $("notice-close").addEventListener("click", () => {
      $("notice").hidden = true;
    });

    $("retry").addEventListener("click", () => {
      state.attempt = 0;
      connect();
    });

    $("new-room-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("new-room").value.trim();
      if (!name || chars(name) > state.limits.max_room_title_length) return;
      $("new-room").value = "";
      updateCounters();
      openRoom(name);
    });

    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("text");
      if (chars(text.value.trim()) > state.limits.max_message_length) return;
      if (post(text.value)) {
        text.value = "";
        autosize();
        updateCounters();
      }
      text.focus();
    });

    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("text").addEventListener("input", autosize);

    $("back").addEventListener("click", () => {
      location.hash = "";
    });
    window.addEventListener("hashchange", showRoomFromHash);

    // The network came back: no need to wait out the backoff.
    window.addEventListener("online", () => {
      if (state.username && !state.socket && !$("chat").hidden) {
        state.attempt = 0;
        connect();
      }
    });
  }

  function autosize() {
    const text = $("text");
    text.style.height = "auto";
    text.style.height = Math.min(text.scrollHeight, window.innerHeight * 0.4) + "px";
  }

  async function start() {
    wire();
    try {
      state.username = (localStorage.getItem(NAME_KEY) || "").trim();
    } catch {
      state.username = "";
    }
    try {
      applySettings((await api("/api/settings")) || {});
    } catch {
      // offline at load: defaults until the first connection
    }
    updateCounters();
    if (state.username) showChat();
    else showLogin();
  }

  start();
})();
