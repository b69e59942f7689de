// obzvon console: a single-page app over the REST API (/api/v1) and its event stream. It keeps
// the API token in this tab's sessionStorage and shows what the token's scopes allow. No
// framework and no build step: the file is served as written, from inside the binary.
"use strict";

(() => {
  const TOKEN_KEY = "obzvon.token";
  const S = { token: sessionStorage.getItem(TOKEN_KEY), me: null, listeners: new Set(), cleanups: [] };
  const main = () => document.getElementById("main");

  // ---- small helpers -------------------------------------------------------------------

  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      // Through the CSSOM: the page's policy (style-src 'self') refuses style attributes.
      else if (k === "style") node.style.cssText = v;
      else if (k === "value") node.value = v;
      else if (k === "checked") node.checked = !!v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  const badge = (state) => el("span", { class: "badge " + (state || "none") }, state || "—");
  const pct = (x, digits = 1) => (x === null || x === undefined ? "—" : (x * 100).toFixed(digits) + " %");
  const num = (x) => (x === null || x === undefined ? "—" : Number(x).toLocaleString("en-GB"));
  const secs = (x) => (x === null || x === undefined ? "—" : clock(x));
  function clock(total) {
    total = Math.max(0, Math.round(total));
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(s).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }
  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString("en-GB") : d.toLocaleString("en-GB");
  }
  const since = (iso) => (iso ? (Date.now() - new Date(iso).getTime()) / 1000 : 0);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const can = (...scopes) => !!S.me && S.me.scopes.some((s) => s === "admin" || scopes.includes(s));
  function toast(text, bad) {
    const box = document.getElementById("toast");
    const msg = el("div", { class: "msg" + (bad ? " bad" : "") }, text);
    box.append(msg);
    setTimeout(() => msg.remove(), bad ? 8000 : 4000);
  }
  function onCleanup(fn) { S.cleanups.push(fn); }
  function every(ms, fn) { const t = setInterval(fn, ms); onCleanup(() => clearInterval(t)); }
  function onEvent(fn) { S.listeners.add(fn); onCleanup(() => S.listeners.delete(fn)); }
  // Calls `fn` at most once per `ms`, after the last trigger: many events, one refresh.
  function debounced(ms, fn) {
    let t = null;
    const call = () => { clearTimeout(t); t = setTimeout(fn, ms); };
    onCleanup(() => clearTimeout(t));
    return call;
  }

  // ---- the API -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super(body.message || `the server answered ${status}`);
      this.status = status;
      this.code = body.error;
      this.fields = body.fields || [];
    }
  }

  async function api(method, path, body, opts = {}) {
    const headers = { Authorization: "Bearer " + S.token };
    let payload;
    if (body !== undefined) {
      headers["Content-Type"] = opts.contentType || "application/json";
      payload = opts.contentType ? body : JSON.stringify(body);
    }
    if (opts.accept) headers.Accept = opts.accept;
    const res = await fetch("/api/v1" + path, { method, headers, body: payload });
    if (res.status === 401) {
      signOut("The server refused the token (unknown or revoked). Sign in again.");
      throw new ApiError(401, { message: "signed out" });
    }
    if (!res.ok) {
      let json = {};
      try { json = await res.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, json);
    }
    if (opts.raw) return res;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
  const get = (path) => api("GET", path);
  const post = (path, body) => api("POST", path, body === undefined ? {} : body);

  // Lead files go up with XMLHttpRequest: fetch cannot report upload progress.
  function upload(path, file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1" + path);
      xhr.setRequestHeader("Authorization", "Bearer " + S.token);
      const csv = !/\.json$/i.test(file.name);
      xhr.setRequestHeader("Content-Type", csv ? "text/csv" : "application/json");
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new ApiError(xhr.status, body));
      };
      xhr.onerror = () => reject(new ApiError(0, { message: "the upload did not reach the server" }));
      xhr.send(file);
    });
  }

  async function download(path, filename) {
    const res = await api("GET", path, undefined, { raw: true, accept: "text/csv" });
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- live events ---------------------------------------------------------------------
  // The stream is read with fetch so the token goes in a header (EventSource cannot send
  // one); on a drop it reconnects with Last-Event-ID and misses nothing.

  const Live = { lastId: null, abort: null };

  function setLive(on) {
    const badgeEl = document.getElementById("live");
    badgeEl.className = "live " + (on ? "on" : "off");
    badgeEl.textContent = on ? "live" : "reconnecting";
  }

  async function runStream() {
    while (S.token) {
      const abort = new AbortController();
      Live.abort = abort;
      try {
        const headers = { Authorization: "Bearer " + S.token };
        if (Live.lastId) headers["Last-Event-ID"] = Live.lastId;
        const res = await fetch("/api/v1/events/stream", { headers, signal: abort.signal });
        if (!res.ok) throw new Error("stream answered " + res.status);
        setLive(true);
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
      } catch (e) {
        if (abort.signal.aborted) return;
      }
      if (!S.token) return;
      setLive(false);
      await sleep(2000);
    }
  }

  function dispatch(block) {
    let id = null, type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const key = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (key === "id") id = value;
      else if (key === "event") type = value;
      else if (key === "data") data.push(value);
    }
    if (id) Live.lastId = id;
    if (!data.length) return;
    let event;
    try { event = JSON.parse(data.join("\n")); } catch (_) { return; }
    for (const fn of [...S.listeners]) {
      try { fn(type, event); } catch (e) { console.error(e); }
    }
  }

  // ---- shell: sign-in, navigation, routing ----------------------------------------------

  function signOut(why) {
    S.token = null;
    S.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (Live.abort) Live.abort.abort();
    location.hash = "#/signin";
    if (why) setTimeout(() => toast(why, true), 50);
  }

  function renderNav() {
    const nav = document.getElementById("nav");
    const items = [];
    if (S.me) {
      if (can("campaigns:write", "reports:read")) items.push(["#/campaigns", "Campaigns"]);
      if (can("reports:read")) items.push(["#/reports", "Reports"]);
      if (can("operators:write", "calls:write", "reports:read")) items.push(["#/operators", "Operators"]);
    }
    nav.replaceChildren(...items.map(([href, text]) =>
      el("a", { href, class: location.hash.startsWith(href) ? "active" : null }, text)));
    document.getElementById("whoami").textContent = S.me ? S.me.name : "";
    document.getElementById("signout").hidden = !S.me;
    if (!S.me) document.getElementById("live").className = "live off";
  }

  function home() {
    if (can("campaigns:write", "reports:read")) return "#/campaigns";
    return "#/operators";
  }

  const ROUTES = [
    [/^#\/campaigns$/, pageCampaigns],
    [/^#\/campaigns\/new$/, (m) => pageCampaignForm(m, null)],
    [/^#\/campaigns\/([0-9a-f-]{36})\/edit$/, (m, id) => pageCampaignForm(m, id)],
    [/^#\/campaigns\/([0-9a-f-]{36})$/, pageCampaign],
    [/^#\/attempts\/([0-9a-f-]{36})$/, pageAttempt],
    [/^#\/reports$/, pageReports],
    [/^#\/operators$/, pageOperators],
    [/^#\/operators\/([0-9a-f-]{36})$/, pageOperator],
  ];

  async function route() {
    for (const fn of S.cleanups.splice(0)) fn();
    const root = main();
    if (!S.token || location.hash === "#/signin") {
      renderNav();
      root.replaceChildren();
      return pageSignIn(root);
    }
    if (!S.me) {
      try {
        S.me = await get("/me");
      } catch (e) {
        if (e.status !== 401) root.replaceChildren(el("div", { class: "alert error" }, "The server did not answer: " + e.message));
        return;
      }
      runStream();
    }
    const hash = location.hash || "";
    const found = ROUTES.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
    if (!found) {
      location.replace(home());
      return;
    }
    renderNav();
    root.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    const [match, page] = found;
    try {
      const content = el("div");
      await page(content, ...match.slice(1));
      root.replaceChildren(content);
    } catch (e) {
      if (e.status === 401) return;
      const why = e.status === 403 ? "Your token does not allow this page: " + e.message
        : e.status === 404 ? "Not found: " + e.message : "Something went wrong: " + e.message;
      root.replaceChildren(el("div", { class: "alert error" }, why));
    }
  }

  function pageSignIn(root) {
    const input = el("input", { type: "password", id: "token", autocomplete: "off", placeholder: "obz_…", required: true });
    const error = el("div");
    const form = el("form", {
      class: "card signin",
      onsubmit: async (e) => {
        e.preventDefault();
        S.token = input.value.trim();
        try {
          S.me = await get("/me");
        } catch (err) {
          S.token = null;
          sessionStorage.removeItem(TOKEN_KEY);
          error.replaceChildren(el("div", { class: "alert error" },
            err.status === 401 ? "That token is unknown or revoked." : "The server did not answer: " + err.message));
          location.hash = "#/signin";
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, S.token);
        runStream();
        location.hash = home();
      },
    },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "Paste an API token. An administrator creates one with ",
      el("span", { class: "mono" }, "obzvon token create --name NAME --scope SCOPE"),
      "; the console shows what its scopes allow."),
    error,
    el("label", { class: "field" }, "API token", input),
    el("p", {}, el("button", { class: "primary", type: "submit", id: "signin" }, "Sign in")));
    root.append(form);
    input.focus();
  }

  // ---- campaigns -----------------------------------------------------------------------

  const OPEN_LEAD_STATES = ["pending", "scheduled", "dialing"];
  const leadTotals = (leads) => {
    const all = Object.values(leads || {}).reduce((a, b) => a + b, 0);
    const open = OPEN_LEAD_STATES.reduce((a, k) => a + ((leads || {})[k] || 0), 0);
    return { all, done: all - open };
  };

  async function pageCampaigns(root) {
    const body = el("tbody");
    const table = el("table", { id: "campaigns" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Campaign"), el("th", {}, "State"), el("th", {}, "Mode"), el("th", {}, "Progress"),
        el("th", { class: "num" }, "In flight"), el("th", { class: "num" }, "Dials today"),
        el("th", { class: "num" }, "Answered"), el("th", { class: "num" }, "Abandon rate"))),
      body);
    root.append(
      el("div", { class: "page-head" },
        el("div", {}, el("h1", {}, "Campaigns"), el("div", { class: "muted" }, "Live: the table follows the calls as they happen.")),
        el("div", { class: "actions" }, can("campaigns:write") && el("a", { class: "button primary", href: "#/campaigns/new", id: "new-campaign" }, "New campaign"))),
      el("div", { class: "card" }, table));

    async function load() {
      const list = await get("/campaigns");
      const lives = await Promise.all(list.map((c) => get(`/campaigns/${c.id}/live`).catch(() => null)));
      if (!list.length) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No campaigns yet.")));
        return;
      }
      body.replaceChildren(...list.map((c, i) => {
        const live = lives[i] || { leads: {}, calls_in_flight: {}, today: {} };
        const t = leadTotals(live.leads);
        const inFlight = Object.values(live.calls_in_flight || {}).reduce((a, b) => a + b, 0);
        return el("tr", { "data-id": c.id },
          el("td", {}, el("a", { href: `#/campaigns/${c.id}` }, c.name), el("div", { class: "muted small" }, c.timezone)),
          el("td", {}, badge(c.state)),
          el("td", {}, c.pacing.mode),
          el("td", {}, el("div", { class: "progress" }, el("span", { style: `width:${t.all ? (100 * t.done) / t.all : 0}%` })),
            el("div", { class: "muted small" }, `${num(t.done)} of ${num(t.all)} leads done`)),
          el("td", { class: "num" }, num(inFlight)),
          el("td", { class: "num" }, num(live.today.dials)),
          el("td", { class: "num" }, num(live.today.answered)),
          el("td", { class: "num" }, pct(live.today.abandon_rate)));
      }));
    }
    await load();
    const refresh = debounced(800, () => load().catch(() => {}));
    onEvent(() => refresh());
  }

  const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  const DAY_NAMES = { mon: "Monday", tue: "Tuesday", wed: "Wednesday", thu: "Thursday", fri: "Friday", sat: "Saturday", sun: "Sunday" };
  const RETRY_RESULTS = [
    ["no-answer", "No answer"], ["busy", "Busy"], ["callback-needed", "Call back later"],
    ["machine", "Answering machine"], ["congestion", "Network busy"], ["failed", "Failed"],
    ["early-hangup", "Customer hung up at once"], ["abandoned", "Abandoned"],
  ];

  // A labelled input whose `data-field` is the API field its 422 errors name.
  function field(label, name, input, help) {
    input.setAttribute("data-field", name);
    input.id = input.id || "f-" + name.replace(/[^a-z0-9_]+/gi, "-");
    return el("label", { class: "field", "data-for": name }, label, input, help && el("span", { class: "help" }, help),
      el("span", { class: "error-text" }));
  }
  const text = (value, attrs) => el("input", Object.assign({ type: "text", value: value ?? "" }, attrs || {}));
  const number = (value, attrs) => el("input", Object.assign({ type: "number", value: value ?? "" }, attrs || {}));
  function select(value, options, attrs) {
    const s = el("select", attrs || {}, ...options.map(([v, t]) => el("option", { value: v }, t)));
    s.value = value;
    return s;
  }

  async function pageCampaignForm(root, id) {
    const existing = id ? await get(`/campaigns/${id}`) : null;
    const operators = await get("/operators").catch(() => []);
    const c = existing || {
      name: "", trunk: "PJSIP/{number}@trunk", caller_id: "", timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
      default_region: "RU", pacing: { mode: "progressive", ratio: 1.5, target_abandon_rate: 0.02 }, max_concurrent_calls: 10,
      calls_per_second: 2, dial_timeout_secs: 30, max_attempts: 3, wrap_up_secs: 10,
      retry_delays_secs: { "no-answer": 3600, busy: 600, "callback-needed": 3600 },
      calling_windows: Object.fromEntries(DAYS.slice(0, 5).map((d) => [d, [{ from: "09:00", to: "21:00" }]])),
      max_abandon_rate: 0.03, recording: false, compliance: { profile: "none" }, amd: { mode: "off" }, operators: [],
    };
    const f = {
      name: text(c.name, { maxlength: 200 }),
      trunk: text(c.trunk),
      caller_id: text(c.caller_id, { placeholder: "+74950000000" }),
      timezone: text(c.timezone),
      default_region: text(c.default_region, { maxlength: 2 }),
      mode: select(c.pacing.mode, [["progressive", "Progressive"], ["predictive", "Predictive"], ["preview", "Preview"]]),
      ratio: number(c.pacing.ratio, { step: "0.1", min: "0.1" }),
      target: number(c.pacing.target_abandon_rate * 100, { step: "0.1", min: "0" }),
      max_concurrent_calls: number(c.max_concurrent_calls, { min: 1 }),
      calls_per_second: number(c.calls_per_second, { step: "0.1", min: "0.1" }),
      dial_timeout_secs: number(c.dial_timeout_secs, { min: 5 }),
      max_attempts: number(c.max_attempts, { min: 1 }),
      wrap_up_secs: number(c.wrap_up_secs, { min: 0 }),
      max_abandon_rate: number(c.max_abandon_rate * 100, { step: "0.1", min: "0" }),
      profile: select((c.compliance || {}).profile || "none", [["none", "None"], ["us-tcpa", "US — TCPA / TSR"], ["uk-ofcom", "UK — Ofcom"], ["ru-230fz", "Russia — 230-FZ (debt collection)"]]),
      amd: select((c.amd || {}).mode || "off", [["off", "Off"], ["hang-up", "Hang up on machines"], ["message", "Leave a message"], ["operator", "Pass machines to an operator"]]),
      recording: el("input", { type: "checkbox", checked: c.recording, id: "f-recording" }),
    };
    const retries = RETRY_RESULTS.map(([key, label]) => [key, number((c.retry_delays_secs || {})[key] ?? "", { min: 0, placeholder: "final" }), label]);
    const windows = DAYS.map((day) => {
      const [span, ...rest] = (c.calling_windows || {})[day] || [];
      return {
        day,
        // The form edits a day's first span; any further ones are kept as they are.
        rest,
        on: el("input", { type: "checkbox", checked: !!span, id: `w-${day}` }),
        from: el("input", { type: "time", value: span ? span.from : "09:00", id: `w-${day}-from` }),
        to: el("input", { type: "time", value: span ? (span.to === "24:00" ? "23:59" : span.to) : "21:00", id: `w-${day}-to` }),
      };
    });
    const anyTime = el("input", { type: "checkbox", id: "w-any", checked: Object.keys(c.calling_windows || {}).length === 0,
      onchange: () => { windowGrid.hidden = anyTime.checked; } });
    const windowGrid = el("div", { class: "windows", style: "margin-top:10px", hidden: anyTime.checked },
      ...windows.flatMap((w) => [
        el("label", { class: "check day" }, w.on, DAY_NAMES[w.day]),
        field("From", `calling_windows.${w.day}`, w.from), el("label", { class: "field" }, "To", w.to),
        el("span", { class: "muted small" }, w.rest.length ? "and " + w.rest.map((r) => `${r.from}–${r.to}`).join(", ") : ""),
      ]));
    const picked = new Set((c.operators || []).map(String));
    const opBoxes = operators.map((o) => [o.id, el("input", { type: "checkbox", checked: picked.has(o.id), value: o.id })]);
    const alerts = el("div", { id: "form-alerts" });

    function spec() {
      const n = (input) => (input.value === "" ? undefined : Number(input.value));
      const body = {
        name: f.name.value, trunk: f.trunk.value, caller_id: f.caller_id.value, timezone: f.timezone.value,
        default_region: f.default_region.value.toUpperCase(),
        // Objects replace the stored ones whole (PATCH merges the top level), so the settings
        // the form does not show go back as they were.
        pacing: Object.assign({}, c.pacing, { mode: f.mode.value, ratio: n(f.ratio), target_abandon_rate: n(f.target) === undefined ? undefined : n(f.target) / 100 }),
        max_concurrent_calls: n(f.max_concurrent_calls), calls_per_second: n(f.calls_per_second),
        dial_timeout_secs: n(f.dial_timeout_secs), max_attempts: n(f.max_attempts), wrap_up_secs: n(f.wrap_up_secs),
        max_abandon_rate: n(f.max_abandon_rate) === undefined ? undefined : n(f.max_abandon_rate) / 100,
        recording: f.recording.checked,
        compliance: Object.assign({}, c.compliance || {}, { profile: f.profile.value }),
        amd: Object.assign({}, c.amd || {}, { mode: f.amd.value }),
        retry_delays_secs: Object.fromEntries(retries.filter(([, input]) => input.value !== "").map(([k, input]) => [k, Number(input.value)])),
        calling_windows: anyTime.checked ? {} : Object.fromEntries(windows.filter((w) => w.on.checked)
          .map((w) => [w.day, [{ from: w.from.value, to: w.to.value === "23:59" ? "24:00" : w.to.value }, ...w.rest]])),
        operators: opBoxes.filter(([, box]) => box.checked).map(([oid]) => oid),
      };
      return JSON.parse(JSON.stringify(body));
    }

    function showErrors(err) {
      for (const label of root.querySelectorAll("label.field")) {
        label.classList.remove("invalid");
        const t = label.querySelector(".error-text");
        if (t) t.textContent = "";
      }
      const inputs = [...root.querySelectorAll("[data-field]")];
      const loose = [];
      for (const fe of err.fields || []) {
        // The longest data-field that the error's field starts with: "calling_windows.mon[0]" → "calling_windows.mon".
        const target = inputs.filter((i) => fe.field === i.dataset.field || fe.field.startsWith(i.dataset.field + ".") || fe.field.startsWith(i.dataset.field + "["))
          .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
        const label = target && target.closest("label.field");
        if (label) {
          label.classList.add("invalid");
          const t = label.querySelector(".error-text");
          t.textContent = (t.textContent ? t.textContent + " " : "") + fe.message;
        } else loose.push(fe);
      }
      alerts.replaceChildren(el("div", { class: "alert error", id: "form-error" },
        el("strong", {}, "The campaign was not saved. "), err.fields && err.fields.length ? "Correct the fields marked below." : err.message,
        loose.length ? el("ul", {}, ...loose.map((fe) => el("li", {}, `${fe.field}: ${fe.message}`))) : null));
      const first = root.querySelector("label.invalid input, label.invalid select");
      if (first) first.focus();
    }

    const save = el("button", { class: "primary", type: "submit", id: "save-campaign" }, existing ? "Save changes" : "Create campaign");
    const form = el("form", {
      id: "campaign-form", novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        save.disabled = true;
        try {
          const saved = existing ? await api("PATCH", `/campaigns/${id}`, spec()) : await post("/campaigns", spec());
          toast(existing ? "Campaign saved." : "Campaign created.");
          location.hash = `#/campaigns/${saved.id}`;
        } catch (err) {
          if (err.status !== 401) showErrors(err);
        } finally {
          save.disabled = false;
        }
      },
    },
    alerts,
    el("div", { class: "card" }, el("h2", {}, "Basics"),
      el("div", { class: "row" },
        field("Name", "name", f.name, "Shown to supervisors; unique."),
        field("Trunk", "trunk", f.trunk, "Asterisk endpoint; {number} becomes the customer's number."),
        field("Caller ID", "caller_id", f.caller_id, "The number customers see and can call back."),
        field("Time zone", "timezone", f.timezone, "IANA zone for leads without their own, e.g. Europe/Moscow."),
        field("Default region", "default_region", f.default_region, "Country for numbers without a country code."))),
    el("div", { class: "card" }, el("h2", {}, "Dialling"),
      el("div", { class: "row" },
        field("Pacing", "pacing.mode", f.mode, "Progressive dials a set ratio per free operator; predictive forecasts; preview lets operators choose."),
        field("Calls per free operator", "pacing.ratio", f.ratio, "Progressive only."),
        field("Target abandon rate, %", "pacing.target_abandon_rate", f.target, "Predictive only; at most the cap."),
        field("Most calls at once", "max_concurrent_calls", f.max_concurrent_calls),
        field("Calls per second", "calls_per_second", f.calls_per_second),
        field("Ring for, seconds", "dial_timeout_secs", f.dial_timeout_secs, "Then the attempt is 'no answer'."),
        field("Attempts per lead", "max_attempts", f.max_attempts),
        field("Wrap-up, seconds", "wrap_up_secs", f.wrap_up_secs, "Time an operator has after a call."))),
    el("div", { class: "card" }, el("h2", {}, "Retries"),
      el("p", { class: "muted" }, "Seconds before a lead is called again after each result; leave empty to make the result final."),
      el("div", { class: "row" }, ...retries.map(([key, input, label]) => field(label, `retry_delays_secs.${key}`, input)))),
    el("div", { class: "card" }, el("h2", {}, "Calling hours"),
      el("p", { class: "muted" }, "Local time in each lead's own zone (the campaign's zone when the lead has none)."),
      el("label", { class: "check" }, anyTime, "Any time of day, every day"),
      windowGrid),
    el("div", { class: "card" }, el("h2", {}, "Compliance and recording"),
      el("div", { class: "row" },
        field("Rule profile", "compliance.profile", f.profile, "Sets floors the campaign cannot loosen."),
        field("Abandon-rate cap, %", "max_abandon_rate", f.max_abandon_rate, "Abandoned ÷ answered calls; 3 % in most regulations."),
        field("Answering machines", "amd.mode", f.amd),
        el("label", { class: "check" }, f.recording, "Record conversations"))),
    el("div", { class: "card" }, el("h2", {}, "Operators"),
      operators.length ? el("p", { class: "muted" }, "Who takes this campaign's calls; none ticked means every operator.")
        : el("div", { class: "alert warn" }, "No operators exist yet: nobody could take this campaign's calls."),
      el("div", { class: "row", "data-field": "operators" }, ...opBoxes.map(([oid, box]) =>
        el("label", { class: "check" }, box, operators.find((o) => o.id === oid).name)))),
    el("p", {}, save, " ", el("a", { class: "button", href: existing ? `#/campaigns/${id}` : "#/campaigns" }, "Cancel")));

    root.append(el("div", { class: "page-head" }, el("h1", {}, existing ? `Edit ${existing.name}` : "New campaign")),
      existing ? warningsBox(existing.warnings) : null, form);
  }

  function warningsBox(warnings) {
    if (!warnings || !warnings.length) return null;
    return el("div", { class: "alert warn", id: "warnings" }, el("strong", {}, "Check these settings:"),
      el("ul", {}, ...warnings.map((w) => el("li", { "data-code": w.code }, w.message))));
  }

  async function pageCampaign(root, id) {
    let campaign = await get(`/campaigns/${id}`);
    const head = el("div", { class: "page-head" });
    const stats = el("div", { class: "stats", id: "stats" });
    const callsBody = el("tbody", { id: "calls" });
    const opsBox = el("div", { id: "operators" });
    const attemptsBody = el("tbody", { id: "attempts" });
    const warnings = el("div");

    function actions() {
      const act = (action, label, cls) => el("button", {
        class: cls, id: `action-${action}`,
        onclick: async () => {
          try {
            await post(`/campaigns/${id}/${action}`);
            campaign = await get(`/campaigns/${id}`);
            toast(`Campaign ${campaign.state}.`);
            renderHead();
            refresh();
          } catch (e) { toast(e.message, true); }
        },
      }, label);
      if (!can("campaigns:write")) return [];
      const s = campaign.state;
      return [
        s === "draft" && act("start", "Start", "good"),
        s === "running" && act("pause", "Pause"),
        (s === "paused" || s === "finished") && act("resume", "Resume", "good"),
        ["draft", "running", "paused"].includes(s) && act("stop", "Stop", "danger"),
        el("a", { class: "button", href: `#/campaigns/${id}/edit`, id: "edit-campaign" }, "Edit"),
      ];
    }
    function renderHead() {
      head.replaceChildren(
        el("div", {}, el("div", { class: "muted small" }, el("a", { href: "#/campaigns" }, "Campaigns"), " / "),
          el("h1", {}, campaign.name, " ", badge(campaign.state)),
          el("div", { class: "muted" }, `${campaign.pacing.mode} · ${campaign.timezone} · caller ID ${campaign.caller_id}`)),
        el("div", { class: "actions" }, ...actions()));
      warnings.replaceChildren(warningsBox(campaign.warnings) || "");
    }

    let liveCalls = [];
    function renderCalls() {
      if (!liveCalls.length) {
        callsBody.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No calls in flight.")));
        return;
      }
      callsBody.replaceChildren(...liveCalls.map((c) => el("tr", {},
        el("td", { class: "mono" }, c.phone), el("td", {}, badge(c.bridged_at ? "on-call" : c.status)),
        el("td", {}, c.operator || "—"),
        el("td", { class: "num" }, clock(since(c.bridged_at || c.answered_at || c.created_at))))));
    }
    function stat(label, value, hint, bad, idAttr) {
      return el("div", { class: "stat", id: idAttr }, el("div", { class: "label" }, label),
        el("div", { class: "value" + (bad ? " bad" : "") }, value), hint && el("div", { class: "hint" }, hint));
    }
    async function loadLive() {
      const live = await get(`/campaigns/${id}/live`);
      if (live.state !== campaign.state) { campaign = await get(`/campaigns/${id}`); renderHead(); }
      const t = leadTotals(live.leads);
      const rate = live.today.abandon_rate, cap = live.max_abandon_rate;
      const flight = Object.values(live.calls_in_flight || {}).reduce((a, b) => a + b, 0);
      stats.replaceChildren(...[
        stat("Leads", num(t.all), `${num(t.done)} done · ${num((live.leads || {}).pending || 0)} waiting`),
        stat("Calls in flight", num(flight), null, false, "stat-flight"),
        stat("Dials today", num(live.today.dials)),
        stat("Answered today", num(live.today.answered), live.today.dials ? pct(live.today.answered / live.today.dials) + " answer rate" : null),
        stat("Abandon rate", pct(rate), `cap ${pct(cap)}`, rate !== null && cap !== null && rate > cap, "stat-abandon"),
        live.pacing && stat("Dial level", live.pacing.dial_level.toFixed(2), live.pacing.fallback ? "fallback: " + live.pacing.fallback : "predictive pacing"),
      ].filter(Boolean));
      liveCalls = live.calls || [];
      renderCalls();
      const ops = Object.entries(live.operators || {});
      opsBox.replaceChildren(ops.length ? el("div", { class: "outcomes" }, ...ops.map(([state, n]) => el("span", {}, badge(state), " ", n)))
        : el("p", { class: "muted" }, "No operator can take this campaign's calls."));
    }
    async function loadAttempts() {
      const list = await get(`/campaigns/${id}/attempts?limit=15`);
      attemptsBody.replaceChildren(...(list.length ? list.map((a) => el("tr", {},
        el("td", {}, when(a.created_at)), el("td", { class: "mono" }, a.phone), el("td", {}, badge(a.result || a.status)),
        el("td", { class: "num" }, a.bridged_at && a.ended_at ? clock((new Date(a.ended_at) - new Date(a.bridged_at)) / 1000) : "—"),
        el("td", {}, el("a", { href: `#/attempts/${a.id}` }, "Open")))) : [el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No calls yet."))]));
    }
    const refresh = debounced(500, () => { loadLive().catch(() => {}); loadAttempts().catch(() => {}); });

    renderHead();
    await Promise.all([loadLive(), loadAttempts()]);
    onEvent((type, ev) => { if (ev.campaignId === id || type === "OperatorStateChanged") refresh(); });
    every(1000, renderCalls);

    root.append(head, warnings, stats,
      el("div", { class: "grid side", style: "margin-top:16px" },
        el("div", { class: "card" }, el("h2", {}, "Calls in flight"),
          el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Number"), el("th", {}, "State"), el("th", {}, "Operator"), el("th", { class: "num" }, "Duration"))), callsBody)),
        el("div", { class: "card" }, el("h2", {}, "Operators"), opsBox)),
      can("campaigns:write") ? importCard(id, refresh) : null,
      el("div", { class: "card" }, el("h2", {}, "Latest calls"),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", {}, "Number"), el("th", {}, "Result"), el("th", { class: "num" }, "Talk"), el("th", {}))), attemptsBody)));
  }

  function importCard(id, refresh) {
    const file = el("input", { type: "file", accept: ".csv,.json,text/csv,application/json", id: "lead-file" });
    const bar = el("span", { style: "width:0%" });
    const progress = el("div", { class: "progress", hidden: true }, bar);
    const result = el("div", { id: "import-result" });
    const go = el("button", { class: "primary", id: "upload-leads", type: "button",
      onclick: async () => {
        if (!file.files.length) { result.replaceChildren(el("div", { class: "alert error" }, "Choose a CSV or JSON file first.")); return; }
        go.disabled = true;
        progress.hidden = false;
        bar.style.width = "0%";
        result.replaceChildren(el("p", { class: "muted" }, "Uploading…"));
        try {
          const report = await upload(`/campaigns/${id}/leads`, file.files[0], (p) => { bar.style.width = `${Math.round(p * 100)}%`; });
          bar.style.width = "100%";
          result.replaceChildren(
            el("div", { class: "alert ok" }, `${num(report.imported)} imported, ${num(report.duplicates)} duplicates, ${num(report.rejected_count)} rejected of ${num(report.received)} rows.`),
            report.rejected.length ? el("table", { id: "rejected" }, el("thead", {}, el("tr", {}, el("th", {}, "Row"), el("th", {}, "Line"), el("th", {}, "Why"))),
              el("tbody", {}, ...report.rejected.slice(0, 100).map((r) => el("tr", {}, el("td", {}, r.row), el("td", {}, r.line ?? "—"), el("td", {}, r.reason))))) : null);
          refresh();
        } catch (e) {
          result.replaceChildren(el("div", { class: "alert error" }, "The file was not imported: " + e.message));
        } finally {
          go.disabled = false;
        }
      } }, "Upload");
    return el("div", { class: "card" }, el("h2", {}, "Import leads"),
      el("p", { class: "muted" }, "CSV with a header row naming a phone column (and name, timezone, external_id, priority; other columns become the lead's fields), or a JSON list."),
      el("div", { class: "upload" }, file, go, progress), result);
  }

  // ---- one call ------------------------------------------------------------------------

  async function pageAttempt(root, id) {
    const a = await get(`/attempts/${id}`);
    const audio = el("div", { id: "recording" });
    const talk = a.bridged_at && a.ended_at ? clock((new Date(a.ended_at) - new Date(a.bridged_at)) / 1000) : "—";
    const row = (k, v) => [el("dt", {}, k), el("dd", {}, v ?? "—")];
    root.append(
      el("div", { class: "page-head" }, el("div", {},
        a.campaign_id ? el("div", { class: "muted small" }, el("a", { href: `#/campaigns/${a.campaign_id}` }, "Campaign"), " / call") : null,
        el("h1", {}, `Call to ${a.phone} `, badge(a.result || a.status)))),
      el("div", { class: "grid two" },
        el("div", { class: "card" }, el("h2", {}, "The call"),
          el("dl", { class: "kv" },
            row("Kind", a.kind), row("Status", a.status), row("Result", a.result), row("Started", when(a.created_at)),
            row("Answered", when(a.answered_at)), row("With operator", when(a.bridged_at)), row("Ended", when(a.ended_at)),
            row("Talk time", talk), row("Ended by", a.ended_by),
            row("Hang-up cause", a.hangup_cause_txt ? `${a.hangup_cause_txt} (${a.hangup_cause})` : null),
            row("Answering machine", a.amd_status ? `${a.amd_status} (${a.amd_cause})` : null),
            row("Notes", a.disposition_notes), row("Callback", when(a.callback_at)),
            row("Why dialled", dialReason(a.dial_reason)))),
        el("div", { class: "card" }, el("h2", {}, "Timeline"),
          el("ul", { class: "timeline", id: "timeline" }, ...(a.timeline || []).map((t) => el("li", {},
            el("div", {}, el("strong", {}, t.to_status), t.result ? [" · ", t.result] : null, el("span", { class: "muted" }, " at ", when(t.at))),
            t.reason ? el("div", { class: "muted small" }, t.reason) : null))),
          el("h2", { style: "margin-top:16px" }, "Recording"), audio)));
    if (!a.recording_name) {
      audio.append(el("p", { class: "muted" }, "This call has no recording."));
      return;
    }
    audio.append(el("p", { class: "muted" }, "Loading the recording…"));
    api("GET", `/attempts/${id}/recording`, undefined, { raw: true })
      .then((res) => res.blob())
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        onCleanup(() => URL.revokeObjectURL(url));
        audio.replaceChildren(el("audio", { controls: true, src: url, id: "recording-audio", preload: "metadata" }),
          el("div", { class: "muted small" }, `${(blob.size / 1024).toFixed(0)} KiB · `, el("a", { href: url, download: `call-${id}.wav` }, "download")));
      })
      .catch((e) => audio.replaceChildren(el("p", { class: "muted" }, e.message)));
  }

  // The scheduler's reasons, as sentences: the pacing slot, the profile, each check passed.
  function dialReason(reason) {
    if (!reason) return null;
    const checks = Array.isArray(reason.checks) ? reason.checks : [];
    return el("div", {},
      reason.pacing ? el("div", {}, reason.pacing) : null,
      reason.profile && reason.profile !== "none" ? el("div", {}, "rule profile " + reason.profile) : null,
      checks.length ? el("ul", { class: "small", style: "margin:4px 0 0; padding-left:18px" }, ...checks.map((c) => el("li", {}, String(c)))) : null);
  }

  // ---- reports -------------------------------------------------------------------------

  // A bar chart in SVG: `series` is [{label, color, values: [..]}] over `labels`.
  function barChart(labels, series, { format = (v) => v, max } = {}) {
    const W = 640, H = 220, left = 44, bottom = 28, top = 10;
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
    const hi = max || Math.max(1e-9, ...all);
    const plotW = W - left - 8, plotH = H - top - bottom;
    const group = plotW / Math.max(1, labels.length);
    const barW = Math.max(2, Math.min(28, (group - 6) / series.length));
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart");
    const add = (tag, attrs, txt) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (txt !== undefined) n.textContent = txt;
      svg.append(n);
      return n;
    };
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      add("line", { x1: left, x2: W - 8, y1: y, y2: y, stroke: "#e6e9ef" });
      add("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, format((hi * i) / 4));
    }
    labels.forEach((label, i) => {
      const x0 = left + i * group + (group - barW * series.length) / 2;
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        const h = (plotH * v) / hi;
        const rect = add("rect", { x: x0 + j * barW, y: top + plotH - h, width: barW - 1, height: Math.max(0, h), fill: s.color, rx: 2 });
        const tip = document.createElementNS(ns, "title");
        tip.textContent = `${label} · ${s.label}: ${format(v)}`;
        rect.append(tip);
      });
      if (labels.length <= 16 || i % Math.ceil(labels.length / 16) === 0) {
        add("text", { x: left + i * group + group / 2, y: H - 10, "text-anchor": "middle" }, label);
      }
    });
    const legend = el("div", { class: "legend" }, ...series.map((s) => el("span", {}, el("i", { style: `background:${s.color}` }), s.label)));
    return el("div", {}, svg, legend);
  }

  async function pageReports(root) {
    const campaigns = await get("/campaigns").catch(() => []);
    const today = new Date();
    const iso = (d) => d.toISOString().slice(0, 10);
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const campaign = select(params.get("campaign") || "", [["", "All campaigns"], ...campaigns.map((c) => [c.id, c.name])], { id: "report-campaign" });
    const from = el("input", { type: "date", value: params.get("from") || iso(new Date(today.getTime() - 6 * 86400000)), id: "report-from" });
    const to = el("input", { type: "date", value: params.get("to") || iso(today), id: "report-to" });
    const out = el("div", { id: "report" });

    function query() {
      const q = new URLSearchParams();
      q.set("from", new Date(from.value + "T00:00:00").toISOString());
      q.set("to", new Date(new Date(to.value + "T00:00:00").getTime() + 86400000).toISOString());
      if (campaign.value) q.set("campaign_id", campaign.value);
      q.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
      return q.toString();
    }
    async function load() {
      const q = query();
      const [total, days, hours, ops] = await Promise.all(["campaigns", "days", "hours", "operators"].map((d) => get(`/reports/${d}?${q}`)));
      const sum = (k) => total.rows.reduce((a, r) => a + (r[k] || 0), 0);
      const dials = sum("dials"), answered = sum("answered"), abandoned = sum("abandoned"), bridged = sum("bridged");
      const converted = sum("converted_leads"), leads = sum("leads");
      const csv = (dimension) => el("button", { type: "button", id: `csv-${dimension}`, onclick: () => download(`/reports/${dimension}?${q}`, `obzvon-${dimension}.csv`).catch((e) => toast(e.message, true)) }, "CSV");
      const fill = (rows, keyLabel) => {
        // Hours come as 0–23, days as dates: label them shortly.
        return rows.map((r) => {
          const key = String(r.key);
          return keyLabel === "hour" ? (key.length > 5 ? key.slice(11, 16) : key.padStart(2, "0") + ":00") : key.slice(5, 10);
        });
      };
      out.replaceChildren(
        el("div", { class: "stats" },
          el("div", { class: "stat", id: "report-dials" }, el("div", { class: "label" }, "Dials"), el("div", { class: "value" }, num(dials))),
          el("div", { class: "stat" }, el("div", { class: "label" }, "Answer rate"), el("div", { class: "value" }, pct(dials ? answered / dials : null))),
          el("div", { class: "stat" }, el("div", { class: "label" }, "Abandon rate"), el("div", { class: "value" }, pct(answered ? abandoned / answered : null))),
          el("div", { class: "stat", id: "report-connected" }, el("div", { class: "label" }, "With an operator"), el("div", { class: "value" }, num(bridged))),
          el("div", { class: "stat", id: "report-conversion" }, el("div", { class: "label" }, "Conversion"), el("div", { class: "value" }, pct(leads ? converted / leads : null)), el("div", { class: "hint" }, `${num(converted)} of ${num(leads)} leads`))),
        el("div", { class: "grid two", style: "margin-top:16px" },
          el("div", { class: "card" }, el("div", { class: "page-head" }, el("h2", {}, "Rates by day"), csv("days")),
            days.rows.length ? barChart(fill(days.rows, "day"), [
              { label: "answer rate", color: "#2e7dd7", values: days.rows.map((r) => r.answer_rate) },
              { label: "abandon rate", color: "#c0392b", values: days.rows.map((r) => r.abandon_rate) },
              { label: "conversion", color: "#1a7f4b", values: days.rows.map((r) => r.conversion) },
            ], { format: (v) => `${Math.round(v * 100)}%`, max: 1 }) : el("p", { class: "empty" }, "No calls in this range.")),
          el("div", { class: "card" }, el("div", { class: "page-head" }, el("h2", {}, "Dials and talk time by hour"), csv("hours")),
            hours.rows.length ? barChart(fill(hours.rows, "hour"), [
              { label: "dials", color: "#8aa9cf", values: hours.rows.map((r) => r.dials) },
              { label: "average talk, s", color: "#1f4e79", values: hours.rows.map((r) => r.avg_talk_secs) },
            ], { format: (v) => Math.round(v) }) : el("p", { class: "empty" }, "No calls in this range."))),
        el("div", { class: "grid two", style: "margin-top:16px" },
          el("div", { class: "card" }, el("h2", {}, "Talk time by day"),
            days.rows.length ? barChart(fill(days.rows, "day"), [
              { label: "average talk, s", color: "#1f4e79", values: days.rows.map((r) => r.avg_talk_secs) },
              { label: "median talk, s", color: "#8aa9cf", values: days.rows.map((r) => r.median_talk_secs) },
            ], { format: (v) => Math.round(v) }) : el("p", { class: "empty" }, "No calls in this range.")),
          el("div", { class: "card" }, el("h2", {}, "Calls and conversions by operator"),
            ops.rows.length ? barChart(ops.rows.map((r) => r.name || "—"), [
              { label: "calls", color: "#2e7dd7", values: ops.rows.map((r) => r.bridged) },
              { label: "converted leads", color: "#1a7f4b", values: ops.rows.map((r) => r.converted_leads) },
            ], { format: (v) => Math.round(v * 10) / 10 }) : el("p", { class: "empty" }, "No operator took a call in this range."))),
        el("div", { class: "card" }, el("div", { class: "page-head" }, el("h2", {}, "By operator"), csv("operators")),
          el("table", { id: "report-operators" }, el("thead", {}, el("tr", {}, el("th", {}, "Operator"), el("th", { class: "num" }, "Calls"),
            el("th", { class: "num" }, "Average talk"), el("th", { class: "num" }, "Median talk"), el("th", { class: "num" }, "Converted leads"), el("th", { class: "num" }, "Conversion"))),
          el("tbody", {}, ...(ops.rows.length ? ops.rows.map((r) => el("tr", {}, el("td", {}, r.name || "—"), el("td", { class: "num" }, num(r.bridged)),
            el("td", { class: "num" }, secs(r.avg_talk_secs)), el("td", { class: "num" }, secs(r.median_talk_secs)),
            el("td", { class: "num" }, num(r.converted_leads)), el("td", { class: "num" }, pct(r.conversion))))
            : [el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No operator took a call in this range."))])))),
        el("div", { class: "card" }, el("div", { class: "page-head" }, el("h2", {}, "By campaign"), csv("campaigns")),
          el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Campaign"), el("th", { class: "num" }, "Dials"), el("th", { class: "num" }, "Answer rate"),
            el("th", { class: "num" }, "Abandon rate"), el("th", { class: "num" }, "With operator"), el("th", { class: "num" }, "Conversion"))),
          el("tbody", {}, ...total.rows.map((r) => el("tr", {}, el("td", {}, r.name), el("td", { class: "num" }, num(r.dials)), el("td", { class: "num" }, pct(r.answer_rate)),
            el("td", { class: "num" }, pct(r.abandon_rate)), el("td", { class: "num" }, num(r.bridged)), el("td", { class: "num" }, pct(r.conversion))))))));
    }
    const go = () => load().catch((e) => out.replaceChildren(el("div", { class: "alert error" }, e.message)));
    root.append(
      el("div", { class: "page-head" }, el("div", {}, el("h1", {}, "Reports"), el("div", { class: "muted" }, "Days and hours in your browser's time zone."))),
      el("div", { class: "filters" },
        el("label", { class: "field" }, "Campaign", campaign), el("label", { class: "field" }, "From", from), el("label", { class: "field" }, "To (inclusive)", to),
        el("button", { class: "primary", type: "button", onclick: go, id: "report-show" }, "Show")),
      out);
    await load();
    const refresh = debounced(1500, go);
    onEvent((type) => { if (type === "OutboundCallEnded" || type === "OutboundCallDisposition") refresh(); });
  }

  // ---- operators -----------------------------------------------------------------------

  async function pageOperators(root) {
    const body = el("tbody");
    async function load() {
      const list = await get("/operators");
      body.replaceChildren(...(list.length ? list.map((o) => el("tr", {},
        el("td", {}, el("a", { href: `#/operators/${o.id}` }, o.name)), el("td", { class: "mono" }, o.endpoint),
        el("td", {}, badge(o.state)), el("td", {}, when(o.state_changed_at)),
        el("td", {}, el("a", { class: "button", href: `#/operators/${o.id}` }, "Open workplace"))))
        : [el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No operators yet."))]));
    }
    await load();
    const refresh = debounced(300, () => load().catch(() => {}));
    onEvent((type) => { if (type === "OperatorStateChanged") refresh(); });
    root.append(el("div", { class: "page-head" }, el("div", {}, el("h1", {}, "Operators"), el("div", { class: "muted" }, "Pick an operator to open their workplace."))),
      el("div", { class: "card" }, el("table", { id: "operators" }, el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Phone"), el("th", {}, "State"), el("th", {}, "Since"), el("th", {}))), body)));
  }

  const OUTCOMES = [
    ["success", "Success", "good"], ["not-interested", "Not interested"], ["callback-needed", "Call back later"],
    ["no-answer", "No answer"], ["do-not-call", "Do not call", "danger"],
  ];

  async function pageOperator(root, id) {
    let op = await get(`/operators/${id}`);
    const head = el("div", { class: "page-head" });
    const callCard = el("div", { class: "card", id: "current-call" });
    const queueCard = el("div", { class: "card", id: "preview" });
    const writer = can("operators:write");
    let shownAttempt = null;
    let shownPhase = null;
    let shownQueue = null;
    let callStarted = null;

    const doing = (label, fn, cls, idAttr) => el("button", { class: cls, id: idAttr, onclick: async (e) => {
      e.target.disabled = true;
      try { await fn(); } catch (err) { toast(err.message, true); } finally { e.target.disabled = false; }
      refresh();
    } }, label);

    function renderHead() {
      const s = op.state;
      head.replaceChildren(
        el("div", {}, el("div", { class: "muted small" }, el("a", { href: "#/operators" }, "Operators"), " / workplace"),
          el("h1", {}, op.name), el("div", { class: "muted" }, op.endpoint),
          el("div", { class: "state-big", style: "margin-top:6px" }, badge(s), el("span", { class: "muted small", id: "state-since" }, " since ", when(op.state_changed_at)))),
        el("div", { class: "actions" }, ...(writer ? [
          s === "offline" && doing("Log in (ring my phone)", () => post(`/operators/${id}/session`), "primary", "login"),
          (s === "paused" || s === "wrap-up") && doing("Ready", () => post(`/operators/${id}/ready`), "good", "ready"),
          (s === "ready" || s === "wrap-up") && doing("Pause", () => post(`/operators/${id}/pause`), null, "pause"),
          s !== "offline" && doing("Log out", () => api("DELETE", `/operators/${id}/session`), "danger", "logout"),
        ] : [])));
    }

    async function renderCall() {
      const attemptId = op.current_attempt_id || shownAttempt;
      if (!attemptId) {
        callStarted = null;
        shownPhase = null;
        callCard.replaceChildren(el("h2", {}, "Current call"), el("p", { class: "muted" },
          op.state === "ready" ? "Waiting for the next call…" : op.state === "offline" ? "Log in to take calls." : "No call."));
        return;
      }
      const a = await get(`/attempts/${attemptId}`);
      // Rebuild the card only when the call moves on: an operator typing notes keeps them.
      const phase = [attemptId, a.ended_at ? "ended" : a.bridged_at ? "bridged" : a.status, a.result || ""].join(":");
      if (phase === shownPhase) return;
      shownPhase = phase;
      const lead = a.lead_id ? await get(`/leads/${a.lead_id}`).catch(() => null) : null;
      shownAttempt = a.ended_at && a.result && !op.current_attempt_id ? null : attemptId;
      callStarted = a.bridged_at || a.answered_at || a.created_at;
      const wrap = a.ended_at ? !a.result || ["success", "not-interested", "callback-needed", "do-not-call"].includes(a.result) : true;
      const notes = el("textarea", { rows: 3, id: "notes", placeholder: "What was agreed" }, a.disposition_notes || "");
      const callback = el("input", { type: "datetime-local", id: "callback-at" });
      let chosen = null;
      const pick = (result) => (e) => {
        chosen = result;
        for (const b of callCard.querySelectorAll(".outcomes button")) b.classList.toggle("chosen", b === e.target);
        callbackRow.hidden = result !== "callback-needed";
      };
      const callbackRow = el("label", { class: "field", hidden: true }, "Call back at (your time)", callback);
      const save = el("button", { class: "primary", id: "save-outcome", onclick: async () => {
        if (!chosen) { toast("Choose an outcome first.", true); return; }
        const body = { result: chosen };
        if (notes.value.trim()) body.notes = notes.value.trim();
        if (chosen === "callback-needed" && callback.value) body.callback_at = new Date(callback.value).toISOString();
        try {
          await post(`/attempts/${attemptId}/disposition`, body);
          toast("Outcome saved.");
          shownAttempt = null;
          refresh();
        } catch (e) { toast(e.message, true); }
      } }, "Save outcome");
      const fields = lead ? Object.entries(lead.fields || {}) : [];
      const history = lead ? lead.attempts.filter((h) => h.id !== attemptId) : [];
      callCard.replaceChildren(
        el("div", { class: "page-head" }, el("h2", {}, "Current call"), badge(a.ended_at ? "wrap-up" : a.bridged_at ? "on-call" : a.status)),
        el("div", { class: "grid two" },
          el("div", {},
            el("div", { class: "state-big", id: "lead-name" }, lead && lead.name ? lead.name : a.phone),
            el("div", { class: "mono" }, a.phone, el("span", { class: "muted", id: "call-clock" }, " · ", clock(since(callStarted)))),
            el("dl", { class: "kv", style: "margin-top:10px" }, ...(lead ? [
              el("dt", {}, "External id"), el("dd", {}, lead.external_id || "—"),
              el("dt", {}, "Attempts"), el("dd", {}, lead.attempts_count),
              ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, typeof v === "string" ? v : JSON.stringify(v))]),
            ] : []))),
          el("div", {}, el("h3", {}, "History"),
            history.length ? el("table", { class: "small" }, el("tbody", {}, ...history.slice(0, 8).map((h) => el("tr", {},
              el("td", {}, when(h.created_at)), el("td", {}, badge(h.result || h.status)), el("td", {}, h.disposition_notes || "")))))
              : el("p", { class: "muted" }, "First call to this lead."))),
        wrap && can("calls:write") ? el("div", { style: "margin-top:12px" }, el("h3", {}, "Outcome"),
          el("div", { class: "outcomes" }, ...OUTCOMES.map(([r, label, cls]) => el("button", { class: cls, type: "button", "data-result": r, onclick: pick(r) }, label))),
          el("div", { class: "row", style: "margin-top:10px" }, el("label", { class: "field" }, "Notes", notes), callbackRow),
          el("p", {}, save)) : null);
    }

    async function renderQueue() {
      const q = await get(`/operators/${id}/queue`).catch(() => null);
      // Rebuild only when the queue changes: a skip reason being typed stays.
      const key = q ? JSON.stringify([q.offered && q.offered.lead_id, q.next.map((l) => l.lead_id)]) : "";
      if (key === shownQueue) return;
      shownQueue = key;
      if (!q || (!q.offered && !q.next.length)) {
        queueCard.replaceChildren(el("h2", {}, "Preview queue"), el("p", { class: "muted" }, "No preview leads waiting."));
        return;
      }
      const reason = el("input", { type: "text", placeholder: "Why skip (required)", id: "skip-reason" });
      queueCard.replaceChildren(el("h2", {}, "Preview queue"),
        q.offered ? el("div", { class: "alert ok" }, el("strong", {}, "Offered now: "), q.offered.name || q.offered.phone, " ", el("span", { class: "mono" }, q.offered.phone),
          el("div", { class: "upload", style: "margin-top:8px" },
            doing("Dial", () => post(`/operators/${id}/queue/dial`), "primary", "preview-dial"), reason,
            doing("Skip", () => post(`/operators/${id}/queue/skip`, { reason: reason.value }), null, "preview-skip"))) : null,
        q.next.length ? el("table", {}, el("tbody", {}, ...q.next.map((l) => el("tr", {}, el("td", {}, l.name || "—"), el("td", { class: "mono" }, l.phone))))) : null);
    }

    const refresh = debounced(250, async () => {
      try {
        op = await get(`/operators/${id}`);
        renderHead();
        await Promise.all([renderCall(), renderQueue()]);
      } catch (_) { /* shown on the next event */ }
    });
    renderHead();
    await Promise.all([renderCall(), renderQueue()]);
    onEvent((type, ev) => { if (ev.operatorId === id) refresh(); });
    every(1000, () => {
      const c = document.getElementById("call-clock");
      if (c && callStarted) c.textContent = " · " + clock(since(callStarted));
    });
    root.append(head, el("div", { class: "grid side" }, callCard, queueCard));
  }

  // ---- start ---------------------------------------------------------------------------

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("signout").addEventListener("click", () => signOut());
    if (!location.hash) location.replace(S.token ? "#/" : "#/signin");
    route();
  });
})();
