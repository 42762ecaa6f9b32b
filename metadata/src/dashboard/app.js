// Cairn operator dashboard. Plain script, no build step, no external URL.
//
// Reads the admin API `cairn admin status` uses, on the node that served
// this page, every POLL_MS: /v1/status, /v1/admin/cluster (leader only; a
// follower answers 421 naming the leader), /v1/admin/workers. The cluster
// secret lives in this tab's sessionStorage only and goes in the
// x-cairn-secret header; a `#secret=...` fragment is accepted once and
// removed from the address bar. Every value from the API is put in the
// page as text (textContent), never as HTML.
"use strict";

(function () {
  const SECRET_KEY = "cairn-secret";
  const STATE_KEY = "cairn-dashboard-state";
  const POLL_MS = 2000;
  const MAX_EVENTS = 100;
  // Repair dispatches turned into events per poll, at most (a big repair
  // would otherwise push every other event out).
  const MAX_REPAIR_EVENTS = 10;

  let timer = null;
  let polls = 0;
  // What the previous poll saw, for the events and the rates; kept in
  // sessionStorage so a reload continues where it was.
  let st = loadState();

  function $(id) {
    return document.getElementById(id);
  }

  function loadState() {
    try {
      const s = JSON.parse(sessionStorage.getItem(STATE_KEY) || "null");
      if (s && Array.isArray(s.events)) {
        return s;
      }
    } catch (e) {
      // A corrupt entry starts afresh.
    }
    return { events: [], prev: null };
  }

  function saveState() {
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify(st));
    } catch (e) {
      // Storage full or disabled: events then live as long as the page.
    }
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) {
        continue;
      }
      if (k === "class") {
        e.className = v;
      } else {
        e.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function fill(table, rows) {
    table.tBodies[0].replaceChildren(...rows);
  }

  function setText(id, v) {
    $(id).textContent = String(v);
  }

  // A bar of fractions [[fraction, class], ...].
  function bar(parts, title) {
    const outer = el("div", { class: "bar", title: title });
    for (const [f, cls] of parts) {
      const s = el("span", { class: cls });
      s.style.width = (Math.max(0, Math.min(1, f || 0)) * 100).toFixed(1) + "%";
      outer.append(s);
    }
    return outer;
  }

  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = Number(n) || 0;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }

  function fmtAge(ms) {
    if (!ms) {
      return "never";
    }
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 120) {
      return s + " s ago";
    }
    if (s < 7200) {
      return Math.round(s / 60) + " min ago";
    }
    return Math.round(s / 3600) + " h ago";
  }

  function fmtTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  // The dashboard URL of the metadata node at `addr` (host:port), or null.
  function dashboardUrl(addr) {
    try {
      const u = new URL(location.protocol + "//" + addr + "/dashboard");
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  async function api(path, secret) {
    const r = await fetch(path, {
      method: "POST",
      headers: { "x-cairn-secret": secret },
      body: "",
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
    let body = null;
    try {
      body = await r.json();
    } catch (e) {
      body = null;
    }
    return { status: r.status, body: body };
  }

  function showLogin(error) {
    clearTimeout(timer);
    timer = null;
    document.body.dataset.state = "login";
    $("login").hidden = false;
    $("dash").hidden = true;
    $("logout").hidden = true;
    const e = $("login-error");
    e.hidden = !error;
    e.textContent = error || "";
    setLive(false, "not connected");
  }

  function showDash() {
    $("login").hidden = true;
    $("dash").hidden = false;
    $("logout").hidden = false;
  }

  function setLive(ok, why) {
    const b = $("live");
    b.dataset.live = ok ? "yes" : "no";
    b.textContent = ok ? "live, updated " + fmtTime(Date.now()) : why;
  }

  function addEvent(kind, text, attrs) {
    st.events.unshift(Object.assign({ t: Date.now(), kind: kind, text: text }, attrs || {}));
    st.events.length = Math.min(st.events.length, MAX_EVENTS);
  }

  // Events from the differences between the previous poll and this one
  // (on the first poll: what is already abnormal). The list is newest
  // first, and the most important kinds of one poll are added last so
  // they come out on top: repairs, then corrupt shards, then chunkserver
  // states, then the leader.
  function deriveEvents(raft, cl) {
    const prev = st.prev;
    const now = prev && !cl
      ? Object.assign({}, prev)
      : { cs: {}, bad: {}, repairs: {}, lost: 0 };
    now.leader = raft.leader;
    now.term = raft.term;
    if (cl) {
      let shown = 0;
      let more = 0;
      for (const r of cl.recent_repairs || []) {
        now.repairs[r.seq] = r.outcome;
        if (prev && prev.repairs[r.seq] === r.outcome) {
          continue;
        }
        if (shown >= MAX_REPAIR_EVENTS) {
          more++;
          continue;
        }
        shown++;
        addEvent("repair", "repair #" + r.seq + " " + r.outcome + ": " + r.bucket + "/" + r.key +
          " stripe " + r.stripe + " shard " + r.index + " \u2192 chunkserver " + r.to, { chunkserver: r.to });
      }
      if (more > 0) {
        addEvent("repair", more + " more repair updates");
      }
      for (const [r, n] of Object.entries(cl.redundancy || {})) {
        if (Number(r) < 0) {
          now.lost += n;
        }
      }
      if (now.lost > 0 && (!prev || !prev.lost)) {
        addEvent("lost", now.lost + " stripe(s) have fewer than k healthy shards (unreadable until a server returns)");
      } else if (now.lost === 0 && prev && prev.lost > 0) {
        addEvent("recovered", "no stripe is below k healthy shards any more");
      }
      for (const [id, p] of Object.entries(cl.scrub || {})) {
        now.bad[id] = p.bad_found;
        const was = prev && prev.bad[id] !== undefined ? prev.bad[id] : 0;
        if (p.bad_found > was) {
          addEvent("corrupt", "scrub on chunkserver " + id + " found " + (p.bad_found - was) +
            " corrupt shard(s)" + (prev ? "" : " since it started"), { chunkserver: id });
        }
      }
      for (const c of cl.chunkservers) {
        now.cs[c.id] = c.state;
        const was = prev ? prev.cs[c.id] : undefined;
        const who = "chunkserver " + c.id + " (" + c.addr + ", " + c.zone + ")";
        const a = { chunkserver: c.id };
        if (was === undefined && prev) {
          addEvent("join", who + " registered, " + c.state, a);
        } else if (was === undefined && c.state !== "up") {
          addEvent(c.state, who + " is " + c.state, a);
        } else if (was !== undefined && was !== c.state) {
          addEvent(c.state, who + ": " + was + " \u2192 " + c.state, a);
        }
      }
      for (const id of Object.keys(prev ? prev.cs : {})) {
        if (now.cs[id] === undefined) {
          addEvent("removed", "chunkserver " + id + " was removed", { chunkserver: id });
        }
      }
    }
    if (prev && prev.leader !== raft.leader) {
      addEvent("leader", raft.leader
        ? "leader is now metadata node " + raft.leader + " (term " + raft.term + ")"
        : "no leader known (term " + raft.term + ")");
    }
    st.prev = now;
  }

  function renderNodes(raft) {
    const rows = [];
    const add = (id, addr, kind) => {
      const role = Number(id) === raft.leader ? "leader" : kind;
      const here = Number(id) === raft.id;
      const url = dashboardUrl(addr);
      const link = here ? "this node" : url ? el("a", { href: url }, "open") : "-";
      rows.push(el("tr", { "data-node": id, "data-role": role, class: here ? "here" : "" },
        el("td", {}, id), el("td", {}, addr), el("td", {}, el("span", { class: "badge " + role }, role)),
        el("td", {}, link)));
    };
    for (const [id, addr] of Object.entries(raft.voters || {})) {
      add(id, addr, "follower");
    }
    for (const [id, addr] of Object.entries(raft.learners || {})) {
      add(id, addr, "learner");
    }
    fill($("metadata-nodes"), rows);
    const leaderAddr = raft.leader ? (raft.voters || {})[raft.leader] : null;
    setText("leader", raft.leader ? "node " + raft.leader + (leaderAddr ? " (" + leaderAddr + ")" : "") : "none");
    setText("term", raft.term);
    setText("node-line", "metadata node " + raft.id + (raft.leader === raft.id ? " (leader)" : ""));
  }

  function renderChunkservers(cl) {
    const list = cl.chunkservers.slice().sort((a, b) => a.id - b.id);
    fill($("chunkservers"), list.map((c) => {
      const cap = c.capacity || 0;
      const shards = cap ? c.used / cap : 0;
      const other = cap ? Math.max(0, cap - c.free - c.used) / cap : 0;
      return el("tr", { "data-chunkserver": c.id, "data-state": c.state, "data-zone": c.zone, "data-addr": c.addr },
        el("td", {}, c.id), el("td", {}, c.addr), el("td", {}, c.zone),
        el("td", {}, el("span", { class: "badge " + c.state }, c.state)),
        el("td", { class: "num" }, fmtBytes(cap)), el("td", { class: "num" }, fmtBytes(c.used)),
        el("td", { class: "num" }, fmtBytes(c.free)),
        el("td", {}, bar([[shards, "shards"], [other, "other"]],
          "shards " + fmtBytes(c.used) + ", other data " + fmtBytes(cap - c.free - c.used))),
        el("td", { class: "num" }, c.shard_count), el("td", {}, fmtAge(c.last_heartbeat_ms)));
    }));
    const zones = {};
    for (const c of list) {
      const z = zones[c.zone] || (zones[c.zone] = { up: 0, n: 0, cap: 0, used: 0, free: 0 });
      z.n++;
      if (c.state === "up") {
        z.up++;
      }
      z.cap += c.capacity;
      z.used += c.used;
      z.free += c.free;
    }
    fill($("zones"), Object.keys(zones).sort().map((name) => {
      const z = zones[name];
      return el("tr", { "data-zone": name, "data-up": z.up, "data-chunkservers": z.n },
        el("td", {}, name), el("td", { class: z.up < z.n ? "warn" : "" }, z.up + " / " + z.n),
        el("td", { class: "num" }, fmtBytes(z.cap)), el("td", { class: "num" }, fmtBytes(z.used)),
        el("td", { class: "num" }, fmtBytes(z.free)),
        el("td", {}, bar([[z.cap ? z.used / z.cap : 0, "shards"],
          [z.cap ? Math.max(0, z.cap - z.free - z.used) / z.cap : 0, "other"]])));
    }));
  }

  function renderRedundancy(cl) {
    const entries = Object.entries(cl.redundancy || {}).map(([r, n]) => [Number(r), n]);
    entries.sort((a, b) => b[0] - a[0]);
    const total = entries.reduce((s, e) => s + e[1], 0);
    const max = entries.length ? entries[0][0] : 0;
    const rows = entries.map(([r, n]) => {
      let meaning;
      let cls;
      if (r < 0) {
        meaning = "LOST: fewer than k healthy shards";
        cls = "crit";
      } else if (r === 0) {
        meaning = "readable, no further loss tolerated";
        cls = n > 0 ? "crit" : "";
      } else {
        meaning = "tolerates " + r + " more loss" + (r > 1 ? "es" : "");
        cls = r < max ? "warn" : "ok";
      }
      return el("tr", { "data-redundancy": r, "data-stripes": n, class: cls },
        el("td", { class: "num" }, r), el("td", {}, meaning), el("td", { class: "num" }, n),
        el("td", {}, bar([[total ? n / total : 0, cls || "ok"]])));
    });
    if (!rows.length) {
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: 4 }, "no erasure-coded stripes yet")));
    }
    fill($("redundancy"), rows);
    $("redundancy").dataset.stripes = total;
  }

  function renderRepair(cl) {
    const sec = $("repair");
    sec.dataset.queue = cl.repair_queue;
    sec.dataset.inFlight = cl.repairs_in_flight;
    sec.dataset.done = cl.repairs_done;
    setText("repair-queue", cl.repair_queue);
    setText("repair-in-flight", cl.repairs_in_flight);
    setText("repair-done", cl.repairs_done);
    setText("repair-rate", (cl.repair_rate || 0).toFixed(2) + " repairs/s");
    const mbps = cl.repair_busy_secs > 0 ? cl.repaired_bytes / cl.repair_busy_secs / 1e6 : 0;
    setText("repair-bytes", fmtBytes(cl.repaired_bytes || 0) +
      (mbps > 0 ? " at " + mbps.toFixed(1) + " MB/s while busy" : ""));
    setText("repair-plan", fmtAge(cl.last_plan_ms));
    setText("objects", cl.objects);
    setText("bytes", fmtBytes(cl.bytes));
    setText("gc", cl.gc_pending);
    setText("orphans", cl.orphans_pending);
    const recent = (cl.recent_repairs || []).slice(-15).reverse();
    fill($("recent-repairs"), recent.map((r) =>
      el("tr", { "data-seq": r.seq, "data-outcome": r.outcome },
        el("td", { class: "num" }, r.seq), el("td", {}, r.bucket + "/" + r.key),
        el("td", { class: "num" }, r.stripe), el("td", { class: "num" }, r.index),
        el("td", {}, "cs " + r.to), el("td", { class: "num" }, r.redundancy),
        el("td", {}, el("span", { class: "badge " + r.outcome }, r.outcome)))));
    if (!recent.length) {
      fill($("recent-repairs"), [el("tr", { class: "empty" }, el("td", { colspan: 7 }, "none since this node became leader"))]);
    }
  }

  function renderScrub(cl) {
    const rows = [];
    let bytes = 0;
    for (const [id, p] of Object.entries(cl.scrub || {}).sort((a, b) => a[0] - b[0])) {
      bytes += p.scanned_bytes;
      const frac = p.total_shards ? p.scanned_shards / p.total_shards : (p.state === "idle" ? 1 : 0);
      rows.push(el("tr", { "data-chunkserver": id, "data-scrub": p.state },
        el("td", {}, id), el("td", {}, el("span", { class: "badge " + p.state }, p.state)),
        el("td", {}, bar([[frac, "ok"]], p.scanned_shards + " / " + p.total_shards + " shards")),
        el("td", { class: "num" }, p.scanned_shards + " / " + p.total_shards + " (" + fmtBytes(p.scanned_bytes) + ")"),
        el("td", { class: "num " + (p.bad_found > 0 ? "crit" : "") }, p.bad_found),
        el("td", {}, fmtAge(p.last_full_pass_ms))));
    }
    fill($("scrub"), rows);
    // The scrub rate over the last poll interval (a new pass restarts the
    // counters: then no rate until the next poll).
    const now = Date.now();
    const last = st.scrub;
    let text = "scrub rate: measuring";
    if (last && bytes >= last.bytes && now > last.t) {
      text = "scrub rate: " + ((bytes - last.bytes) / ((now - last.t) / 1000) / 1e6).toFixed(1) + " MB/s over all chunkservers";
    }
    st.scrub = { t: now, bytes: bytes };
    setText("scrub-rate", text);
  }

  function renderWorkers(list) {
    fill($("workers"), (list || []).map((w) => {
      let state = w.state;
      if (state && typeof state === "object" && state.throttled) {
        state = "throttled " + (state.throttled.secs + state.throttled.nanos / 1e9).toFixed(1) + " s";
      }
      return el("tr", { "data-worker": w.name },
        el("td", {}, w.name), el("td", {}, String(state)), el("td", {}, w.status || ""),
        el("td", { class: "num " + (w.errors ? "crit" : ""), title: w.last_error || "" }, w.errors));
    }));
  }

  function renderEvents() {
    const items = st.events.map((e) => el("li", { class: "event " + e.kind, "data-kind": e.kind, "data-chunkserver": e.chunkserver },
      el("time", {}, fmtTime(e.t)), " ", e.text));
    if (!items.length) {
      items.push(el("li", { class: "empty" }, "nothing yet"));
    }
    $("events").replaceChildren(...items);
  }

  function banner(nodes) {
    const b = $("banner");
    if (!nodes) {
      b.hidden = true;
      b.replaceChildren();
      return;
    }
    b.hidden = false;
    b.replaceChildren(...nodes);
  }

  async function poll() {
    timer = null;
    const secret = sessionStorage.getItem(SECRET_KEY);
    if (!secret) {
      showLogin();
      return;
    }
    try {
      const [s, c, w] = await Promise.all([
        api("/v1/status", secret),
        api("/v1/admin/cluster", secret),
        api("/v1/admin/workers", secret),
      ]);
      if (s.status === 401 || c.status === 401) {
        sessionStorage.removeItem(SECRET_KEY);
        showLogin("This node refused the secret (401). Check it and log in again.");
        return;
      }
      if (s.status !== 200 || !s.body) {
        throw new Error("/v1/status answered " + s.status);
      }
      showDash();
      const raft = s.body;
      renderNodes(raft);
      let cl = null;
      if (c.status === 200 && c.body) {
        cl = c.body;
        banner(null);
        $("dash").dataset.view = "leader";
      } else if (c.status === 421) {
        $("dash").dataset.view = "follower";
        const leader = c.body && c.body.leader;
        const url = leader ? dashboardUrl(leader) : null;
        banner(url
          ? ["This node follows; the cluster view is served by the leader at " + leader + ": ",
            el("a", { href: url, id: "leader-link" }, "open the leader's dashboard"),
            " (log in there again: the secret stays with this tab and this address)."]
          : ["This node knows no leader (an election may be running); retrying."]);
      } else {
        $("dash").dataset.view = "error";
        banner(["The cluster view is unavailable: " + c.status + " " +
          (c.body && c.body.message ? c.body.message : "")]);
      }
      deriveEvents(raft, cl);
      if (cl) {
        renderChunkservers(cl);
        renderRedundancy(cl);
        renderRepair(cl);
        renderScrub(cl);
      }
      if (w.status === 200) {
        renderWorkers(w.body);
      }
      renderEvents();
      saveState();
      polls++;
      document.body.dataset.state = "live";
      document.body.dataset.polls = polls;
      setLive(true);
    } catch (e) {
      document.body.dataset.state = "error";
      setLive(false, "connection lost: " + e.message);
    } finally {
      if (sessionStorage.getItem(SECRET_KEY) && timer === null && document.body.dataset.state !== "login") {
        timer = setTimeout(poll, POLL_MS);
      }
    }
  }

  function start() {
    const h = location.hash;
    if (h.startsWith("#secret=")) {
      let s = "";
      try {
        s = decodeURIComponent(h.slice("#secret=".length));
      } catch (e) {
        s = "";
      }
      if (s) {
        sessionStorage.setItem(SECRET_KEY, s);
      }
      history.replaceState(null, "", location.pathname + location.search);
    }
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const s = $("secret").value;
      $("secret").value = "";
      if (s) {
        sessionStorage.setItem(SECRET_KEY, s);
        st = { events: [], prev: null };
        clearTimeout(timer);
        poll();
      }
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(SECRET_KEY);
      sessionStorage.removeItem(STATE_KEY);
      st = { events: [], prev: null };
      showLogin();
    });
    if (sessionStorage.getItem(SECRET_KEY)) {
      poll();
    } else {
      showLogin();
    }
  }

  start();
})();
