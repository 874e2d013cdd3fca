// The actor view: polls /api/actors and shows every actor's counters live.
//
// Polling is what switches the server's message tracing on (it stays on for a
// few seconds after the last poll), so this page costs the server nothing once
// it is closed or paused. Every name and message is put on the page as text.
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
  const HIDDEN = new Set(["name", "kind", "alive", "recent", "room", "username", "mailbox_limit"]);

  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // actor name -> {li, values: Map stat -> element, last: info}
  let paused = false;
  let timer = 0;
  let inFlight = false;

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
    head.append(el("span", "card-title", title(actor)));
    head.append(el("span", "tag", actor.kind));
    if (actor.name !== title(actor)) head.append(el("span", "card-name", actor.name));
    const bar = el("div", "bar");
    bar.append(el("div", "bar-fill"));
    bar.hidden = true;
    const stats = el("dl", "stats");
    const recent = el("ol", "recent");
    li.append(head, bar, stats, recent);
    const card = { li, bar, stats, recent, values: new Map(), last: null, recentKey: "" };
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
          item.append(at, el("span", "what", String(r.message)));
          return item;
        }),
      );
    }
    card.last = actor;
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
    $("rooms-count").textContent = `(${order.rooms.length})`;
    $("sessions-count").textContent = `(${order.sessions.length})`;
    $("summary").textContent = view.tracing
      ? `Tracing is on while this page is open (it switches off ${view.trace_seconds ?? "a few"} s after the last look).`
      : "Tracing is off.";
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

  poll();
})();
