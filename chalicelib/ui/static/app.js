// Spool dashboard: plain JavaScript, no build step, no outside asset.
//
// Safety rules this file keeps:
// - every value from the server reaches the page as text (text nodes, textContent,
//   setAttribute on plain attributes); no server value is ever parsed as HTML;
// - the API key lives in sessionStorage and travels only in the X-API-Key header
//   (localStorage holds only a random sign-out mark, never the key)
//   of fetch() calls to this dashboard's own JSON routes; no cookie is set or sent;
// - every URL is relative to this script's own address, so the page works at /ui,
//   behind a proxy prefix and under an API Gateway stage (/api/ui).
"use strict";

(function () {
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
  const API = new URL("../api/", SCRIPT_URL).href;
  const KEY = "spool.apiKey";
  // Sign out in one tab must end every copy of the key, also one in a tab that was on
  // another page then (no BroadcastChannel message reached it, and its sessionStorage,
  // the tab's and not the page's, still held the key: Back showed the tenant's jobs).
  // Sign out writes a new random mark to localStorage (a mark, never the key); a tab
  // keeps its key only while the mark it signed in under is still the current one.
  const SIGNED_OUT = "spool.signedOut"; // localStorage: the last sign out's mark
  const SIGNED_IN_UNDER = "spool.signedInUnder"; // sessionStorage: the mark at sign-in
  const POLL_MS = 1000;
  const STATES = ["queued", "running", "retrying", "succeeded", "dead", "cancelled"];
  const SVG = "http://www.w3.org/2000/svg";

  const app = document.getElementById("app");
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");

  // -- DOM helpers -----------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name.startsWith("on")) {
        el.addEventListener(name.slice(2), value);
        listened.add(el);
      }
      else if (name === "checked") el.checked = Boolean(value);
      else if (name === "value") el.value = value;
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    append(el, kids);
    return el;
  }

  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(visible(String(kid))));
    }
    return el;
  }

  // Bidirectional overrides and isolates (U+202A-202E, U+2066-2069) in a payload or an
  // error reordered the text around them as shown (an address read backwards), and the
  // other invisible format characters (Unicode Cf) did their work unseen: a right-to-left
  // mark (U+200F, U+061C) swapped "12 34" to "34 12", a zero-width space or joiner, U+FEFF
  // or a tag character (U+E0000-E007F: a whole hidden message) made "admin\u200B" look
  // like "admin". Characters of other categories draw as nothing too: the Hangul fillers
  // (U+115F, U+1160, U+3164, U+FFA0, letters), the braille blank (U+2800), the combining
  // grapheme joiner and the rest Unicode calls default-ignorable, so "admin\u3164" looked
  // like "admin" and an error of fillers looked empty. Each is shown as its escape
  // instead, and obeyed nowhere; only the zero-width joiner between two emoji stays (it
  // draws them as one picture), and a variation selector on what it varies: an emoji
  // (a keycap's digit, #, * before U+20E3), a CJK ideograph or a Mongolian letter.
  const INVISIBLE = /[\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]/gu;
  const EMOJI = /[\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0F]/u;
  const SELECTOR = /^\p{Variation_Selector}$/u;
  const VARIED = /^[\p{Extended_Pictographic}\p{Emoji_Presentation}\p{Script=Han}\p{Script=Mongolian}]$/u;
  const KEYCAP = /^[0-9#*]$/u;
  function before(whole, at) {  // the code point that ends where `at` begins
    const low = whole.charCodeAt(at - 1);
    return low >= 0xDC00 && low <= 0xDFFF && at >= 2 ? whole.slice(at - 2, at) : whole.slice(at - 1, at);
  }
  function visible(text) {
    return text.replace(INVISIBLE, (c, at, whole) => {
      if (c === "\u200D" && EMOJI.test(whole.slice(Math.max(0, at - 2), at)) && EMOJI.test(whole.slice(at + 1, at + 3))) return c;
      if (SELECTOR.test(c)) {
        const base = before(whole, at);
        if (VARIED.test(base) || (KEYCAP.test(base) && whole.charAt(at + c.length) === "\u20E3")) return c;
      }
      const hex = c.codePointAt(0).toString(16).toUpperCase();
      return hex.length > 4 ? "\\u{" + hex + "}" : "\\u" + hex.padStart(4, "0");
    });
  }

  // Polling redraws a page every second while its data moves (jobs dying, say). Built
  // afresh and swapped in, every button and link was a new node at each redraw: a click
  // pressed on one was lost when the node went before the release, the keyboard focus
  // fell to the page, and a checked row could be redrawn unchecked. `morph` brings the
  // old nodes to the new ones instead: a node equal to its new self stays as it is,
  // rows (data-id) are matched by job, not by place, and a node with a listener is
  // replaced when it differs, since its listener may hold data that changed, unless it
  // is marked data-live (its listeners read the page's state when they fire).
  const listened = new WeakSet();

  function morph(el, ...kids) {
    morphChildren(el, [...append(document.createElement("div"), kids).childNodes]);
    return el;
  }

  function morphChildren(el, next) {
    const byId = new Map();
    for (const child of el.children) if (child.hasAttribute("data-id")) byId.set(child.getAttribute("data-id"), child);
    const olds = [...el.childNodes];
    const result = next.map((node, i) => {
      const id = node.nodeType === 1 ? node.getAttribute("data-id") : null;
      const old = id !== null ? byId.get(id) : olds[i];
      const matchable = old && (id !== null || !(old.nodeType === 1 && old.hasAttribute("data-id")));
      return matchable ? morphNode(old, node) : node;
    });
    const kept = new Set(result);
    for (const old of olds) if (!kept.has(old)) old.remove(); // first: what stays never moves
    result.forEach((node, i) => {
      if (el.childNodes[i] !== node) el.insertBefore(node, el.childNodes[i] || null);
    });
  }

  function morphNode(old, node) {
    if (old.nodeType !== node.nodeType || old.nodeName !== node.nodeName) return node;
    if (old.nodeType === Node.TEXT_NODE) {
      if (old.nodeValue !== node.nodeValue) old.nodeValue = node.nodeValue;
      return old;
    }
    if (old.nodeType !== Node.ELEMENT_NODE) return node;
    if (old.isEqualNode(node)) {
      syncChecked(old, node);
      return old;
    }
    if ((listened.has(old) || listened.has(node)) && !node.hasAttribute("data-live")) return node;
    for (const { name } of [...old.attributes]) if (!node.hasAttribute(name)) old.removeAttribute(name);
    for (const { name, value } of [...node.attributes]) if (old.getAttribute(name) !== value) old.setAttribute(name, value);
    morphChildren(old, [...node.childNodes]);
    syncChecked(old, node);
    return old;
  }

  // `checked` is a property, which isEqualNode does not compare: the new node's says
  // what the page's state is (it was built from it).
  function syncChecked(old, node) {
    const were = old.tagName === "INPUT" ? [old] : [...old.querySelectorAll("input")];
    const are = node.tagName === "INPUT" ? [node] : [...node.querySelectorAll("input")];
    were.forEach((input, i) => {
      if (are[i] && input.checked !== are[i].checked) input.checked = are[i].checked;
    });
  }

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    for (const kid of kids) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return el;
  }

  function replace(el, ...kids) {
    el.replaceChildren();
    return append(el, kids);
  }

  function link(hash, ...kids) {
    return h("a", { href: hash }, ...kids);
  }

  function jobLink(id) {
    return link("#/job/" + encodeURIComponent(id), h("code", {}, id));
  }

  function badge(state) {
    return h("span", { class: "badge state-" + (STATES.includes(state) ? state : "other") }, state);
  }

  function when(iso) {
    if (!iso) return h("span", { class: "muted" }, "—");
    const at = new Date(iso);
    const seconds = Math.round((at.getTime() - Date.now()) / 1000);
    return h("time", { datetime: iso, title: iso }, relative(seconds));
  }

  function relative(seconds) {
    const future = seconds > 0;
    const s = Math.abs(seconds);
    const text = s < 60 ? s + "s" : s < 3600 ? Math.floor(s / 60) + "m" : s < 86400
      ? Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m"
      : Math.floor(s / 86400) + "d";
    return future ? "in " + text : text + " ago";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 120) return seconds.toFixed(1) + " s";
    return relative(-Math.round(seconds)).replace(" ago", "");
  }

  // Redraw only what changed: a list that did not move keeps its elements (and the
  // button under the pointer), so polling never eats a click or a text selection.
  function changed(holder, data) {
    const text = JSON.stringify(data);
    if (holder.last === text) return false;
    holder.last = text;
    return true;
  }

  function pretty(value) {
    return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
  }

  // -- the API ---------------------------------------------------------------------
  class SignedOut extends Error {}
  // A step of an action confirmed before the latest sign-in (or sign-out): not sent.
  class Superseded extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // `session`: the sign-in an action was confirmed under (see confirmBar). "Purge all"
  // takes a request per 5,000 jobs, and each read the key afresh: signed out and in
  // again as another tenant while it ran, its next steps went out with the new key.
  async function api(path, body, session) {
    if (session !== undefined && session !== sessions) throw new Superseded("");
    const key = storedKey();
    if (!key) throw new SignedOut("");
    const headers = { "X-API-Key": key, Accept: "application/json" };
    const init = { method: body === undefined ? "GET" : "POST", headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    const message = data && data.error ? data.error.message : response.statusText;
    if (response.status === 401) {
      forgetKey();
      throw new SignedOut(message);
    }
    if (!response.ok) throw new ApiError(response.status, message || "request failed");
    return data;
  }

  // -- routing and polling ----------------------------------------------------------
  let page = null; // { refresh: async () => void }
  let generation = 0;
  let busy = false;
  let sessions = 0; // bumped by every sign-in form shown (a sign-out, a 401, a new tab)

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean);
    if (!storedKey()) return signIn("");
    drawNav(parts[0] || "overview");
    generation += 1;
    app.dataset.view = hash; // which view the page shows now (tests wait on it)
    if (parts[0] === "jobs") return show(jobsPage(params));
    if (parts[0] === "job" && parts[1]) return show(jobPage(decoded(parts[1])));
    if (parts[0] === "dead") return show(deadPage(params));
    if (parts[0] === "schedules") return show(schedulesPage());
    return show(overviewPage());
  }

  // A link can hold any text: "%E0" would make decodeURIComponent throw and leave a
  // blank page, so a malformed id is kept as typed (the server answers "not found").
  function decoded(text) {
    try {
      return decodeURIComponent(text);
    } catch (_) {
      return text;
    }
  }

  function show(next) {
    page = next;
    refresh();
  }

  async function refresh() {
    if (!page || busy) return;
    const mine = generation;
    busy = true;
    try {
      await page.refresh(mine);
      setStatus("");
    } catch (err) {
      if (err instanceof SignedOut) return signIn(err.message);
      setStatus(err.message || String(err));
    } finally {
      busy = false;
    }
  }

  function current(mine) {
    return mine === generation;
  }

  setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, POLL_MS);

  function setStatus(text) {
    let bar = document.getElementById("status");
    if (!bar) return;
    bar.textContent = visible(text);
    bar.hidden = !text;
  }

  function frame(title, ...kids) {
    return replace(app, h("h1", {}, title), h("p", { id: "status", class: "error", hidden: true }), ...kids);
  }

  function drawNav(active) {
    const items = [
      ["overview", "#/", "Overview"],
      ["jobs", "#/jobs", "Jobs"],
      ["dead", "#/dead", "Dead letters"],
      ["schedules", "#/schedules", "Schedules"],
    ];
    replace(
      nav,
      items.map(([name, href, label]) => h("a", { href, class: name === active ? "active" : null }, label)),
    );
    replace(
      who,
      h("button", { type: "button", class: "link", id: "sign-out", onclick: () => {
        forgetKey();
        try {
          localStorage.setItem(SIGNED_OUT, newMark());
        } catch (_) {
          // No localStorage (storage blocked): the message below still reaches open tabs.
        }
        if (signOuts) signOuts.postMessage("signed-out");
        signIn("Signed out.");
      } }, "Sign out"),
    );
  }

  // -- sign in -----------------------------------------------------------------------
  // A browser copies a tab's sessionStorage into a tab made from it ("Duplicate tab",
  // window.open), and that copy stayed signed in after Sign out in the first: on a
  // shared machine, the next person had the tenant's jobs in the other tab. Sign out
  // now tells every dashboard tab of this origin (the message holds no key), and each
  // signed-in one drops its key and shows the sign-in form.
  const signOuts = typeof BroadcastChannel === "function" ? new BroadcastChannel("spool.sign-out") : null;
  if (signOuts) {
    signOuts.onmessage = () => {
      if (!sessionStorage.getItem(KEY)) return;
      forgetKey();
      signIn("Signed out in another tab.");
    };
  }

  function lastSignOut() {
    try {
      return localStorage.getItem(SIGNED_OUT) || "";
    } catch (_) {
      return "";
    }
  }

  // A random mark: a counter could be stuck by a value it cannot add one to.
  function newMark() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The tab's key, unless a sign out anywhere came after the sign-in that stored it.
  function storedKey() {
    const key = sessionStorage.getItem(KEY);
    if (!key) return null;
    if ((sessionStorage.getItem(SIGNED_IN_UNDER) || "") === lastSignOut()) return key;
    forgetKey();
    return null;
  }

  function keepKey(key) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(SIGNED_IN_UNDER, lastSignOut());
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(SIGNED_IN_UNDER);
  }

  // Back to a page kept in the back/forward cache: it shows what it showed when left,
  // and a sign out since then must take that away now, not at the next poll.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) route();
  });

  function signIn(message) {
    page = null;
    sessions += 1;
    generation += 1;
    replace(nav);
    replace(who);
    const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true, placeholder: "API key" });
    const note = h("p", { class: "error", id: "sign-in-error", hidden: !message }, message || "");
    const form = h(
      "form",
      { id: "sign-in", class: "card", onsubmit: async (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!/^[\x21-\x7e]+$/.test(key)) {
          // fetch() cannot put other characters in a header; no key holds them anyway.
          note.textContent = "An API key is visible ASCII characters only (no spaces or accents): paste it again.";
          note.hidden = false;
          return;
        }
        keepKey(key);
        try {
          await api("overview");
          if (location.hash === "" || location.hash === "#/") route();
          else route();
        } catch (err) {
          if (!(err instanceof SignedOut)) forgetKey();
          note.textContent = err.message || "that key was not accepted";
          note.hidden = false;
        }
      } },
      h("h1", {}, "Sign in"),
      h("p", {}, "Paste an API key. It stays in this tab (sessionStorage) and is sent only in the X-API-Key header."),
      input,
      h("button", { type: "submit", id: "sign-in-button" }, "Sign in"),
      note,
    );
    replace(app, form);
    input.focus();
  }

  // -- overview ------------------------------------------------------------------------
  function overviewPage() {
    const cards = h("div", { class: "cards", id: "totals" });
    const chart = h("div", { class: "chart", id: "chart" });
    const workers = h("p", { id: "workers" });
    const table = h("table", { id: "queues" });
    const more = h("p", { class: "muted", id: "queues-more", hidden: true });
    frame("Overview", cards, h("h2", {}, "Last hour: attempts per minute"), chart, workers, h("h2", {}, "Queues"), more, table);
    return {
      async refresh(mine) {
        const data = await api("overview");
        if (!current(mine)) return;
        replace(
          cards,
          STATES.map((s) => link("#/jobs?state=" + s, h("div", { class: "card stat", "data-state": s }, h("span", { class: "n" }, data.totals[s]), badge(s)))),
        );
        replace(chart, bars(data.throughput, 1200, 120, "wide"), legend());
        const hidden = data.queues_total - data.queues.length;
        replace(more, hidden > 0 ? "The " + data.queues.length + " busiest of " + data.queues_total + " queues (most jobs waiting, running or dead); the totals and the chart count them all." : "");
        more.hidden = !(hidden > 0);
        replace(workers, data.workers.live + " live worker" + (data.workers.live === 1 ? "" : "s") + " (seen in the last " + data.workers.within_seconds + " s)");
        replace(
          table,
          h("thead", {}, h("tr", {}, h("th", {}, "Queue"), STATES.map((s) => h("th", {}, s)), h("th", {}, "Oldest due"), h("th", {}, "Workers"), h("th", {}, "Last hour"), h("th", {}, "Per minute"))),
          h(
            "tbody",
            {},
            data.queues.length === 0 ? h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No jobs yet.")) : null,
            data.queues.map((q) =>
              h(
                "tr",
                { "data-queue": q.queue },
                h("td", {}, link("#/jobs?queue=" + encodeURIComponent(q.queue), q.queue)),
                STATES.map((s) => h("td", { class: "num", "data-state": s }, q.states[s])),
                h("td", { class: "num" }, q.oldest_due_seconds === null ? "—" : duration(q.oldest_due_seconds)),
                h("td", { class: "num" }, q.workers),
                h("td", { class: "num" }, q.succeeded_last_hour + " ok / " + q.failed_last_hour + " failed"),
                h("td", {}, bars(q.throughput, 180, 28)),
              ),
            ),
          ),
        );
      },
    };
  }

  function bars(series, width, height, wide) {
    const top = Math.max(1, ...series.map(([ok, bad]) => ok + bad));
    const step = width / series.length;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: wide ? "bars wide" : "bars", role: "img", preserveAspectRatio: "none" });
    chart.append(svg("title", {}, "succeeded (green) and failed (red) attempts per minute, oldest on the left"));
    series.forEach(([ok, bad], i) => {
      const okH = (ok / top) * (height - 2);
      const badH = (bad / top) * (height - 2);
      if (ok) chart.append(svg("rect", { x: i * step + 0.5, y: height - okH, width: Math.max(1, step - 1), height: okH, class: "ok" }));
      if (bad) chart.append(svg("rect", { x: i * step + 0.5, y: height - okH - badH, width: Math.max(1, step - 1), height: badH, class: "bad" }));
    });
    return chart;
  }

  function legend() {
    return h("p", { class: "legend" }, h("span", { class: "swatch ok" }), "succeeded ", h("span", { class: "swatch bad" }), "failed (retried, dead or lease expired)");
  }

  // -- jobs ------------------------------------------------------------------------------
  const trails = new Map(); // filter -> cursors of the pages before this one

  function jobsHash(filters, cursor) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
    if (cursor) params.set("cursor", cursor);
    const text = params.toString();
    return "#/jobs" + (text ? "?" + text : "");
  }

  function jobsPage(params) {
    const filters = { state: params.get("state") || "", queue: params.get("queue") || "", type: params.get("type") || "", find: params.get("find") || "" };
    const cursor = params.get("cursor") || "";
    const key = JSON.stringify(filters);
    const trail = trails.get(key) || [];
    trails.set(key, trail);
    const state = h("select", { name: "state", id: "filter-state" }, h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s }, s)));
    state.value = filters.state;
    const queue = h("input", { name: "queue", id: "filter-queue", placeholder: "queue", value: filters.queue });
    const type = h("input", { name: "type", id: "filter-type", placeholder: "type", value: filters.type });
    const find = h("input", { name: "find", id: "find", placeholder: "job id or idempotency key", value: filters.find });
    const form = h(
      "form",
      { class: "filters", id: "job-filters", onsubmit: (event) => {
        event.preventDefault();
        location.hash = jobsHash({ state: state.value, queue: queue.value.trim(), type: type.value.trim(), find: find.value.trim() ? find.value : "" }, "");
      } },
      state, queue, type, find,
      h("button", { type: "submit", id: "apply-filters" }, "Apply"),
    );
    const table = h("table", { id: "jobs" });
    const pager = h("div", { class: "pager", id: "pager" });
    frame("Jobs", form, table, pager);
    return {
      async refresh(mine) {
        const query = new URLSearchParams();
        for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
        if (cursor) query.set("cursor", cursor);
        const data = await api("jobs?" + query.toString());
        if (!current(mine) || !changed(this, data)) return;
        morph(table, jobsHead(), h("tbody", {}, data.jobs.length ? data.jobs.map((job) => jobRow(job)) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No jobs match."))));
        const position = trail.indexOf(cursor);
        const pageNo = cursor ? (position >= 0 ? position + 2 : trail.length + 1) : 1;
        morph(
          pager,
          h("button", { type: "button", id: "newer", disabled: !cursor, onclick: () => {
            const at = trail.indexOf(cursor);
            const before = at > 0 ? trail[at - 1] : "";
            location.hash = jobsHash(filters, before);
          } }, "← Newer"),
          h("span", { id: "page-number" }, "Page " + pageNo),
          h("button", { type: "button", id: "older", "data-cursor": data.next_cursor || "", disabled: !data.next_cursor, onclick: () => {
            if (!trail.includes(data.next_cursor)) {
              const at = trail.indexOf(cursor);
              trail.splice(at + 1, trail.length, data.next_cursor);
            }
            location.hash = jobsHash(filters, data.next_cursor);
          } }, "Older →"),
        );
      },
    };
  }

  function jobsHead(select) {
    return h("thead", {}, h("tr", {}, select || null, ["Job", "Type", "Queue", "State", "Attempts", "Created", "Updated", "Last error"].map((t) => h("th", {}, t))));
  }

  function jobRow(job, select) {
    return h(
      "tr",
      { "data-id": job.id, "data-state": job.state },
      select || null,
      h("td", {}, jobLink(job.id)),
      h("td", {}, job.type),
      h("td", {}, job.queue),
      h("td", {}, badge(job.state)),
      h("td", { class: "num" }, job.attempts + "/" + job.max_attempts),
      h("td", {}, when(job.created_at)),
      h("td", {}, when(job.updated_at)),
      h("td", { class: "error-text" }, job.error || ""),
    );
  }

  // -- one job -----------------------------------------------------------------------------
  // The question before an action that cannot be undone. Its way out reads "Go back":
  // it read "Cancel", beside a red "Cancel" that cancelled the job. It takes the focus
  // (on the way out, the safe button), Escape closes it, and the focus goes back to
  // the button that opened it.
  function confirmBar(message, label, action) {
    const opener = document.activeElement;
    const close = () => {
      bar.remove();
      if (opener && opener.isConnected && opener.focus) opener.focus();
    };
    const bar = h(
      "div",
      { class: "confirm", id: "confirm", role: "alertdialog", "aria-labelledby": "confirm-message", onkeydown: (event) => {
        if (event.key === "Escape") close();
      } },
      h("span", { id: "confirm-message" }, message),
      h("button", { type: "button", id: "confirm-yes", class: "danger", onclick: async () => {
        close();
        // Every request of the action is made as this sign-in, or not at all.
        const session = sessions;
        try {
          await action((path, body) => api(path, body, session));
        } catch (err) {
          if (err instanceof Superseded) return; // signed out meanwhile: the new page is not its
          if (err instanceof SignedOut) return signIn(err.message);
          setStatus(err.message || String(err));
        }
        refresh();
      } }, label),
      h("button", { type: "button", id: "confirm-no", onclick: close }, "Go back"),
    );
    const old = document.getElementById("confirm");
    if (old) old.remove();
    app.insertBefore(bar, app.children[1] || null);
    bar.querySelector("#confirm-no").focus();
    return bar;
  }

  function jobPage(id) {
    const head = h("div", { id: "job-head" });
    const actions = h("div", { class: "actions", id: "job-actions" });
    const facts = h("table", { class: "facts", id: "job-facts" });
    const payload = h("div", { id: "job-payload" });
    const result = h("div", { id: "job-result" });
    const attempts = h("div", { id: "job-attempts" });
    frame("Job", head, actions, facts, h("h2", {}, "Payload"), payload, h("h2", {}, "Result"), result, h("h2", {}, "Attempts"), attempts);
    let drawnFinal = false;
    return {
      async refresh(mine) {
        if (drawnFinal) return; // a finished job changes only through its own buttons
        const job = await api("jobs/" + encodeURIComponent(id));
        if (!current(mine) || !changed(this, job)) return;
        draw(job);
        drawnFinal = ["succeeded", "dead", "cancelled"].includes(job.state);
      },
    };

    function act(path, label, past) {
      return h("button", { type: "button", id: label.toLowerCase(), class: "danger", onclick: () =>
        confirmBar(label + " job " + id + "?", label + " job", async (api) => {
          const job = await api("jobs/" + encodeURIComponent(id) + "/" + path, {});
          draw(job);
          drawnFinal = false;
          setStatus("");
          note(past);
        }) }, label);
    }

    function note(text) {
      const done = h("p", { class: "note", id: "action-note" }, text);
      const old = document.getElementById("action-note");
      if (old) old.remove();
      actions.after(done);
    }

    function draw(job) {
      replace(head, h("p", {}, h("code", { id: "job-id" }, job.id), " ", badge(job.state), " ", h("span", { class: "muted" }, job.type + " on " + job.queue)));
      replace(actions, job.can_cancel ? act("cancel", "Cancel", "Cancelled.") : null, job.can_redrive ? act("redrive", "Redrive", "Redriven: queued again with a fresh attempt budget.") : null);
      const t = job.timings;
      const row = (label, value) => h("tr", {}, h("th", {}, label), h("td", {}, value));
      replace(
        facts,
        row("State", h("span", { id: "job-state" }, job.state)),
        row("Attempts", job.attempts + " of " + job.max_attempts),
        row("Priority", job.priority),
        row("Idempotency key", job.idempotency_key ? h("code", {}, job.idempotency_key) : "—"),
        row("Created", when(job.created_at)),
        row("Runs at", when(job.run_at)),
        row("Started", when(job.started_at)),
        row("Finished", when(job.finished_at)),
        row("Waited", duration(t.waited_seconds)),
        row("Ran", duration(t.ran_seconds)),
        row("Total", duration(t.total_seconds)),
        row("Last error", job.error ? h("pre", { class: "error-text", id: "job-error" }, job.error) : "—"),
      );
      replace(payload, pretty(job.payload));
      replace(result, job.result === null || job.result === undefined ? h("p", { class: "muted" }, "—") : pretty(job.result));
      replace(
        attempts,
        job.attempt_history_error
          ? h("p", { class: "error-text" }, job.attempt_history_error)
          : job.attempt_history.length === 0
          ? h("p", { class: "muted" }, "No attempt recorded yet.")
          : h(
            "table",
            { id: "attempts" },
            h("thead", {}, h("tr", {}, ["#", "Outcome", "Started", "Took", "Worker", "Error"].map((c) => h("th", {}, c)))),
            h("tbody", {}, job.attempt_history.map(attemptRows)),
          ),
      );
    }
  }

  function attemptRows(a) {
    const extra = [];
    if (a.traceback) extra.push(h("details", { class: "traceback" }, h("summary", {}, "Traceback"), h("pre", {}, a.traceback)));
    if (a.log_tail && a.log_tail.length) extra.push(h("details", {}, h("summary", {}, "Last log lines"), h("pre", {}, a.log_tail.join("\n"))));
    if (a.next_delay !== null && a.next_delay !== undefined) extra.push(h("p", { class: "muted" }, "next try after " + duration(a.next_delay)));
    return [
      h(
        "tr",
        { class: "attempt outcome-" + a.outcome },
        h("td", { class: "num" }, a.number),
        h("td", {}, a.outcome),
        h("td", {}, when(a.started_at)),
        h("td", { class: "num" }, duration(a.seconds)),
        h("td", {}, h("code", {}, a.worker)),
        h("td", { class: "error-text" }, a.error_type ? a.error_type + ": " : "", a.error || ""),
      ),
      extra.length ? h("tr", { class: "attempt-extra" }, h("td", {}), h("td", { colspan: 5 }, extra)) : null,
    ];
  }

  // -- dead letters ---------------------------------------------------------------------------
  function deadPage(params) {
    const cursor = params.get("cursor") || "";
    const selected = new Set();
    const bar = h("div", { class: "actions", id: "dead-actions" });
    const table = h("table", { id: "dead" });
    const pager = h("div", { class: "pager" });
    frame("Dead letters", bar, table, pager);
    let total = 0;
    let shown = [];

    // Their listeners read `selected` and `total` when clicked (data-live): a count
    // that moves updates the button in place.
    function drawBar() {
      const n = selected.size;
      morph(
        bar,
        h("button", { type: "button", id: "redrive-selected", "data-live": true, disabled: !n, onclick: () => ask("redrive", [...selected]) }, "Redrive selected (" + n + ")"),
        h("button", { type: "button", id: "purge-selected", "data-live": true, class: "danger", disabled: !n, onclick: () => ask("purge", [...selected]) }, "Purge selected (" + n + ")"),
        h("button", { type: "button", id: "redrive-all", "data-live": true, disabled: !total, onclick: () => ask("redrive", null) }, "Redrive all (" + total + ")"),
        h("button", { type: "button", id: "purge-all", "data-live": true, class: "danger", disabled: !total, onclick: () => ask("purge", null) }, "Purge all (" + total + ")"),
      );
    }

    function ask(verb, ids) {
      const count = ids ? ids.length : total;
      const what = count + " dead job" + (count === 1 ? "" : "s");
      const message = verb === "purge" ? "Purge " + what + "? They are deleted for good." : "Redrive " + what + "? They go back to the queue with a fresh attempt budget.";
      confirmBar(message, verb === "purge" ? "Purge" : "Redrive", async (api) => {
        let done = 0;
        if (ids) {
          done = (await api("dead/" + verb, { ids })).done;
        } else {
          // At most the count the confirmation said: a job that died while it was open,
          // or a redriven one that died again between steps, is not acted on unasked.
          while (done < count) {
            const step = await api("dead/" + verb, { all: true, max: count - done });
            done += step.done;
            if (!step.more || step.done === 0) break;
          }
        }
        selected.clear();
        const out = h("p", { class: "note", id: "action-note" }, (verb === "purge" ? "Purged " : "Redriven ") + done + " job" + (done === 1 ? "" : "s") + ".");
        const old = document.getElementById("action-note");
        if (old) old.remove();
        bar.after(out);
      });
    }

    return {
      async refresh(mine) {
        const [data, overview] = await Promise.all([
          api("jobs?state=dead" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "")),
          api("overview"),
        ]);
        if (!current(mine) || !changed(this, [data, overview.totals.dead])) return;
        total = overview.totals.dead;
        shown = data.jobs.map((j) => j.id);
        // A checked job that newer deaths pushed off this page stays checked (it was
        // unchecked unseen): the buttons' counts include it.
        const all = h("input", { type: "checkbox", id: "select-page", "data-live": true, "aria-label": "select every job on this page", checked: shown.length > 0 && shown.every((id) => selected.has(id)), onchange: (e) => {
          for (const id of shown) (e.target.checked ? selected.add(id) : selected.delete(id));
          table.querySelectorAll("input.pick").forEach((box) => (box.checked = e.target.checked));
          drawBar();
        } });
        morph(
          table,
          jobsHead(h("th", {}, all)),
          h(
            "tbody",
            {},
            data.jobs.length
              ? data.jobs.map((job) => jobRow(job, h("td", {}, h("input", { type: "checkbox", class: "pick", "aria-label": "select " + job.id, checked: selected.has(job.id), onchange: (e) => {
                (e.target.checked ? selected.add(job.id) : selected.delete(job.id));
                drawBar();
              } }))))
              : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No dead jobs.")),
          ),
        );
        morph(
          pager,
          h("button", { type: "button", disabled: !cursor, onclick: () => (location.hash = "#/dead") }, "← First page"),
          h("button", { type: "button", "data-cursor": data.next_cursor || "", disabled: !data.next_cursor, onclick: () => (location.hash = "#/dead?cursor=" + encodeURIComponent(data.next_cursor)) }, "Older →"),
        );
        drawBar();
      },
    };
  }

  // -- schedules ----------------------------------------------------------------------------------
  function schedulesPage() {
    const body = h("div", { id: "schedules" });
    frame("Schedules", body);
    return {
      async refresh(mine) {
        const data = await api("schedules");
        if (!current(mine) || !changed(this, data)) return;
        replace(
          body,
          data.jobs_visible ? null : h("p", { class: "muted" }, "Periodic schedules and their jobs belong to the " + data.system_tenant + " tenant: sign in with its key to see them."),
          !data.jobs_visible
            ? null
            : data.schedules.length === 0
            ? h("p", { class: "muted" }, "No schedules are configured.")
            : h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["Schedule", "When", "Type", "Queue", "Next run", "Last runs"].map((c) => h("th", {}, c)))),
              h(
                "tbody",
                {},
                data.schedules.map((s) =>
                  h(
                    "tr",
                    { "data-schedule": s.name },
                    h("td", {}, s.name),
                    h("td", {}, s.when),
                    h("td", {}, s.type),
                    h("td", {}, s.queue || "—"),
                    h("td", {}, when(s.next_run)),
                    h(
                      "td",
                      {},
                      s.last_runs === null
                        ? "—"
                        : h("ul", { class: "runs" }, s.last_runs.map((r) => h("li", {}, when(r.tick), " ", r.job ? [jobLink(r.job.id), " ", badge(r.job.state)] : h("span", { class: "muted" }, "not enqueued")))),
                    ),
                  ),
                ),
              ),
            ),
        );
      },
    };
  }

  window.addEventListener("hashchange", route);
  route();
})();
