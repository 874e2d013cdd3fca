// The actor view: polls /api/actors and shows every actor's counters live.
//
// Polling is what switches the server's message tracing on (it stays on for a
// few seconds after the last poll), so this page costs the server nothing once
// it is closed or paused. Every name and message is put on the page as text;
// names through names.js (naneNames), which shows hidden characters and isolates each name.
//
// With the server started with --controls, the page also carries fault
// controls: it asks for the token printed at start (or takes it from the
// link's #token=...), and each card gets buttons that call /api/controls/*.
"use strict";

(() => {
  const POLL_MS = 500; // at least once a second, with room for a slow answer
  const RETRY_MS = 2000; // after a failed poll
  const FETCH_TIMEOUT_MS = 4000;
  const RECENT_SHOWN = 5;

  // Stats shown first, in this order, with these labels; other numbers follow.
  const LABELS = {
    outbox: "outbox",
    mailbox: "mailbox",
    handled: "handled",
    restarts: "restarts",
    failures: "failures",
    subscribers: "subscribers",
    history: "history",
    sent: "sent",
    sessions: "sessions",
    delivered: "delivered",
    rooms: "rooms",
    forgotten: "forgotten",
    posted: "posted",
  };
  const HIDDEN = new Set(["name", "kind", "alive", "recent", "room", "username", "mailbox_limit",
    "paused", "slow_ms", "delay_ms", "control"]);
  const TOKEN_KEY = "nane.controls.token"; // sessionStorage: forgotten with the tab
  const DISCONNECTS = [
    ["1000", "close 1000 (normal)"],
    ["1001", "close 1001 (going away)"],
    ["1011", "close 1011 (server error)"],
    ["drop", "drop TCP, no close frame"],
    ["silent", "go silent"],
  ];

  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // actor name -> {li, values: Map stat -> element, last: info}
  let paused = false;
  let timer = 0;
  let inFlight = false;
  // Fault controls: `available` when the server has them on, `on` once our token works.
  const faults = { available: false, on: false, token: "", checking: false };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function title(actor) {
    if (actor.kind === "room" && typeof actor.room === "string") return actor.room;
    if (actor.kind === "session" && typeof actor.username === "string") return actor.username;
    return actor.name;
  }

  function groupOf(actor) {
    if (actor.kind === "room") return $("rooms");
    if (actor.kind === "session") return $("sessions");
    return $("core");
  }

  function statNames(actor) {
    const names = Object.keys(LABELS).filter((k) => Number.isFinite(actor[k]));
    if (actor.kind === "session" && "outbox" in actor) names.splice(names.indexOf("mailbox"), 1);
    for (const k of Object.keys(actor)) {
      if (!HIDDEN.has(k) && !(k in LABELS) && Number.isFinite(actor[k])) names.push(k);
    }
    return names;
  }

  function formatAt(seconds) {
    const d = new Date(seconds * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function makeCard(actor) {
    const li = el("li", "card");
    li.dataset.actor = actor.name;
    li.dataset.kind = actor.kind;
    const head = el("div", "card-head");
    head.append(naneNames.node(title(actor), "card-title"));
    head.append(el("span", "tag", actor.kind));
    if (actor.name !== title(actor)) head.append(naneNames.node(actor.name, "card-name"));
    const bar = el("div", "bar");
    bar.append(el("div", "bar-fill"));
    bar.hidden = true;
    const stats = el("dl", "stats");
    const recent = el("ol", "recent");
    const faultState = el("p", "fault-state");
    li.append(head, bar, stats, faultState, recent);
    const card = { li, bar, stats, recent, faultState, values: new Map(), last: null, recentKey: "",
      buttons: null };
    cards.set(actor.name, card);
    return card;
  }

  function updateCard(card, actor) {
    card.li.classList.toggle("stopped", actor.alive === false);
    // The stat list can grow (a field appears): rebuild it when it changes.
    const names = statNames(actor);
    if (names.join() !== Array.from(card.values.keys()).join()) {
      card.values.clear();
      card.stats.replaceChildren();
      for (const name of names) {
        const box = el("div", "stat");
        box.dataset.stat = name;
        box.append(el("dt", "", LABELS[name] || name.replace(/_/g, " ")));
        const dd = el("dd");
        box.append(dd);
        card.stats.append(box);
        card.values.set(name, dd);
      }
    }
    for (const [name, dd] of card.values) {
      const value = actor[name];
      const before = card.last ? card.last[name] : value;
      dd.textContent = String(value);
      if (value !== before) {
        dd.parentElement.classList.remove("changed");
        void dd.offsetWidth; // restart the highlight animation
        dd.parentElement.classList.add("changed");
      }
    }
    // The queue bar: how full the mailbox (a session's outbox) is.
    const limit = actor.mailbox_limit;
    const depth = Number.isFinite(actor.outbox) ? actor.outbox : actor.mailbox;
    if (Number.isFinite(limit) && limit > 0 && Number.isFinite(depth)) {
      card.bar.hidden = false;
      const share = Math.min(1, depth / limit);
      card.bar.firstChild.style.width = `${(share * 100).toFixed(1)}%`;
      card.bar.classList.toggle("high", share >= 0.5);
      card.bar.title = `${depth} of ${limit} waiting`;
    } else {
      card.bar.hidden = true;
    }
    const recent = Array.isArray(actor.recent) ? actor.recent.slice(-RECENT_SHOWN).reverse() : [];
    const key = recent.map((r) => `${r.at}|${r.message}`).join("\n");
    if (key !== card.recentKey) {
      card.recentKey = key;
      card.recent.replaceChildren(
        ...recent.map((r) => {
          const item = el("li");
          const at = el("time", "at", Number.isFinite(r.at) ? formatAt(r.at) : "");
          item.append(at, naneNames.node(String(r.message), "what"));
          return item;
        }),
      );
    }
    updateFaults(card, actor);
    card.last = actor;
  }

  // ---- fault controls -----------------------------------------------------

  function faultMs() {
    const value = Number.parseInt($("fault-ms").value, 10);
    return Number.isFinite(value) ? Math.min(10000, Math.max(0, value)) : 500;
  }

  async function callControl(name, body) {
    const ctl = new AbortController();
    const abort = setTimeout(() => ctl.abort(), 30000); // crash-until-give-up takes a while
    try {
      const response = await fetch("/api/controls" + (name ? "/" + name : ""), {
        method: "POST",
        cache: "no-store",
        signal: ctl.signal,
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + faults.token },
        body: JSON.stringify(body || {}),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        const err = new Error(typeof answer.error === "string" ? answer.error : `HTTP ${response.status}`);
        err.status = response.status;
        throw err;
      }
      return answer.result;
    } finally {
      clearTimeout(abort);
    }
  }

  function controlStatus(text, isError) {
    const status = $("controls-status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  async function run(label, name, body) {
    controlStatus(`${label}…`);
    try {
      await callControl(name, body);
      controlStatus(`${label}: done`);
    } catch (err) {
      controlStatus(`${label}: ${err.message}`, true);
      if (err.status === 403) checkToken();
    }
  }

  function makeButtons(card, actor) {
    const box = el("div", "faults");
    const name = actor.name;
    const shown = naneNames.isolated(name); // in the status line
    const buttons = {};
    const add = (key, label, onClick, danger) => {
      const button = el("button", danger ? "danger" : "", label);
      button.type = "button";
      button.dataset.control = key;
      button.addEventListener("click", onClick);
      box.append(button);
      buttons[key] = button;
    };
    add("crash", "crash", () => run(`crash ${shown}`, "crash", { actor: name }), true);
    add("pause", "pause", () => {
      const control = card.last && card.last.paused ? "resume" : "pause";
      run(`${control} ${shown}`, control, { actor: name });
    });
    add("slow", "slow down", () => {
      const ms = card.last && card.last.slow_ms ? 0 : faultMs();
      run(`slow ${shown} to ${ms} ms`, "slow", { actor: name, ms });
    });
    if (actor.kind === "room") {
      add("crash-until-give-up", "crash until it gives up",
        () => run(`crash ${shown} until it gives up`, "crash-until-give-up", { actor: name }), true);
    }
    if (actor.kind === "session") {
      const how = el("select", "");
      how.setAttribute("aria-label", "how to disconnect");
      for (const [value, label] of DISCONNECTS) {
        const option = el("option", "", label);
        option.value = value;
        how.append(option);
      }
      box.append(how);
      buttons.how = how;
      add("disconnect", "disconnect",
        () => run(`disconnect ${shown} (${how.value})`, "disconnect", { actor: name, how: how.value }), true);
    }
    if (actor.kind === "hub") {
      add("delay", "delay delivery", () => {
        const ms = card.last && card.last.delay_ms ? 0 : faultMs();
        run(`delay delivery by ${ms} ms`, "delay", { ms });
      });
    }
    if (actor.kind === "registry") {
      add("forget", "forget everything", () => run("forget everything", "forget", {}), true);
    }
    card.li.insertBefore(box, card.faultState);
    card.buttons = buttons;
    card.buttonBox = box;
  }

  function updateFaults(card, actor) {
    if (faults.on && !card.buttons && actor.alive !== false) makeButtons(card, actor);
    if (!faults.on && card.buttons) {
      card.buttonBox.remove();
      card.buttons = null;
    }
    if (card.buttons) {
      card.buttons.pause.textContent = actor.paused ? "resume" : "pause";
      card.buttons.slow.textContent = actor.slow_ms ? "normal speed" : "slow down";
      if (card.buttons.delay) card.buttons.delay.textContent = actor.delay_ms ? "deliver at once" : "delay delivery";
    }
    const notes = [];
    if (actor.paused) notes.push("paused");
    if (actor.slow_ms) notes.push(`slowed: +${actor.slow_ms} ms per message`);
    if (actor.delay_ms) notes.push(`delivery delayed ${actor.delay_ms} ms`);
    const last = actor.control;
    if (last && typeof last.control === "string") {
      notes.push(`last control: ${last.control}` + (Number.isFinite(last.at) ? ` at ${formatAt(last.at)}` : ""));
    }
    card.faultState.textContent = notes.join(" · ");
  }

  function showFaults() {
    $("controls-bar").hidden = !faults.on;
    $("controls-login").hidden = !faults.available || faults.on;
    for (const card of cards.values()) if (card.last) updateFaults(card, card.last);
  }

  // Does our token open the controls? 403: ask for it; 404: they are off.
  async function checkToken() {
    if (faults.checking) return;
    faults.checking = true;
    try {
      if (faults.token) {
        await callControl("", {});
        faults.on = true;
      } else {
        faults.on = false;
      }
    } catch (err) {
      faults.on = false;
      if (err.status === 403) {
        faults.token = "";
        try {
          sessionStorage.removeItem(TOKEN_KEY);
        } catch {
          // storage disabled
        }
      }
      if (err.status === 404) faults.available = false;
    } finally {
      faults.checking = false;
      showFaults();
    }
  }

  function setAvailable(available) {
    if (available === faults.available) return;
    faults.available = available;
    if (available) checkToken();
    else {
      faults.on = false;
      showFaults();
    }
  }

  function takeTokenFromLink() {
    const match = /^#token=(.+)$/.exec(location.hash);
    try {
      if (match) {
        sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
        history.replaceState(null, "", location.pathname + location.search); // out of sight
      }
      faults.token = sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      if (match) faults.token = decodeURIComponent(match[1]);
    }
  }

  function render(view) {
    const actors = Array.isArray(view.actors) ? view.actors : [];
    const seen = new Set();
    const order = { core: [], rooms: [], sessions: [] };
    for (const actor of actors) {
      if (!actor || typeof actor.name !== "string") continue;
      seen.add(actor.name);
      const card = cards.get(actor.name) || makeCard(actor);
      updateCard(card, actor);
      order[groupOf(actor).id].push(card.li);
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.li.remove();
        cards.delete(name);
      }
    }
    for (const [id, items] of Object.entries(order)) {
      const list = $(id);
      // Re-append only when the order changed, so nothing flickers.
      const current = Array.from(list.children);
      if (current.length !== items.length || current.some((node, i) => node !== items[i])) {
        list.replaceChildren(...items);
      }
    }
    $("rooms-empty").hidden = order.rooms.length > 0;
    $("sessions-empty").hidden = order.sessions.length > 0;
    // A big server lists only the first few of each (max_actors_listed) and gives the totals.
    $("rooms-count").textContent = countText(order.rooms.length, view.rooms_total, "the most recently active");
    $("sessions-count").textContent = countText(order.sessions.length, view.sessions_total, "the oldest");
    setAvailable(view.controls === true);
    $("summary").textContent = view.tracing
      ? `Tracing is on while this page is open (it switches off ${view.trace_seconds ?? "a few"} s after the last look).`
      : "Tracing is off.";
  }

  function countText(shown, total, which) {
    return Number.isInteger(total) && total > shown ? `(${shown} of ${total}: ${which})` : `(${shown})`;
  }

  function setLive(kind, text) {
    const live = $("live");
    live.dataset.state = kind;
    live.textContent = text;
  }

  async function poll() {
    timer = 0;
    if (paused) return;
    const ctl = new AbortController();
    const abort = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    let next = POLL_MS;
    inFlight = true;
    try {
      const response = await fetch("/api/actors", { cache: "no-store", signal: ctl.signal });
      const body = await response.json();
      if (!body || typeof body.result !== "object" || body.result === null) {
        throw new Error(body && body.error ? body.error : "unexpected answer");
      }
      render(body.result);
      setLive("online", `Live · updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
    } catch (err) {
      setLive("reconnecting", `Server unreachable (${err.name === "AbortError" ? "timeout" : err.message}); retrying`);
      next = RETRY_MS;
    } finally {
      clearTimeout(abort);
      inFlight = false;
    }
    if (!paused) timer = setTimeout(poll, next);
  }

  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "Resume" : "Pause";
    $("pause").setAttribute("aria-pressed", String(paused));
    if (paused) {
      clearTimeout(timer);
      timer = 0;
      setLive("idle", "Paused: tracing switches off in a few seconds");
    } else if (!timer && !inFlight) {
      poll();
    }
  });

  $("controls-login").addEventListener("submit", (event) => {
    event.preventDefault();
    faults.token = $("controls-token").value.trim();
    $("controls-token").value = "";
    try {
      sessionStorage.setItem(TOKEN_KEY, faults.token);
    } catch {
      // storage disabled: kept for this page only
    }
    checkToken();
  });

  takeTokenFromLink();
  poll();
})();
