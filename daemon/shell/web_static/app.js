// aud's live page: a snapshot over Server-Sent Events, kept current by progress and result events.
// Plain DOM code, no libraries; every text goes in through textContent.
"use strict";
(function () {
  const PAGE = 60;
  const $ = (id) => document.getElementById(id);
  let shown = 0;          // results rendered
  let total = 0;          // results the daemon has
  let loading = false;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (h) return h + " h " + String(m % 60).padStart(2, "0") + " min";
    return m + " min " + String(s % 60).padStart(2, "0") + " s";
  }

  function when(seconds) {
    const d = new Date(seconds * 1000), p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes());
  }

  function fileHref(rel) {
    return "/files/" + rel.split("/").map(encodeURIComponent).join("/");
  }

  function toast(text) {
    const t = el("div", { class: "toast", role: "status" }, text);
    document.body.append(t);
    setTimeout(() => t.remove(), 4000);
  }

  async function post(url, button) {
    button.disabled = true;
    try {
      const r = await fetch(url, { method: "POST", credentials: "same-origin" });
      const body = await r.json().catch(() => ({}));
      if (!r.ok || !body.ok) toast(body.error || ("refused: HTTP " + r.status));
    } catch (e) {
      toast("the daemon did not answer: " + e);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ running jobs

  function jobCard(job) {
    const card = el("article", { class: "job", "data-job": job.job },
      el("div", { class: "name" }, job.file),
      el("button", { class: "danger cancel", type: "button", title: "cancel job " + job.job }, "Cancel"),
      el("div", { class: "bar", role: "progressbar" }, el("span")),
      el("div", { class: "numbers" }),
    );
    card.querySelector("button").addEventListener("click", (ev) => {
      if (confirm("Cancel job " + job.job + " (" + job.file + ")?")) post("/api/jobs/" + job.job + "/cancel", ev.target);
    });
    updateJob(card, job);
    return card;
  }

  function updateJob(card, job) {
    const done = job.frames_done || 0, all = job.frames_total || 0;
    const pct = all ? Math.min(100, (100 * done) / all) : 0;
    card.dataset.done = done;
    card.dataset.total = all;
    const bar = card.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    bar.firstChild.style.width = pct.toFixed(1) + "%";
    const parts = [done + " / " + all + " frames", pct.toFixed(0) + " %"];
    if (job.fps) parts.push(job.fps.toFixed(2) + " frames/s");
    if (job.eta_s !== null && job.eta_s !== undefined) parts.push("about " + duration(job.eta_s) + " left");
    card.querySelector(".numbers").textContent = parts.join(" · ");
    let note = card.querySelector(".waitnote");
    if (job.waiting) {
      if (!note) card.append(note = el("div", { class: "waitnote" }));
      note.textContent = "finished, waiting to write: " + job.waiting;
    } else if (note) note.remove();
  }

  function renderRunning(running) {
    const box = $("running");
    $("running-count").textContent = running.length;
    const keep = new Map();
    for (const card of box.querySelectorAll(".job")) keep.set(card.dataset.job, card);
    box.replaceChildren();
    if (!running.length) box.append(el("p", { class: "empty" }, "Nothing running."));
    for (const job of running) {
      const card = keep.get(String(job.job));
      if (card) { updateJob(card, job); box.append(card); } else box.append(jobCard(job));
    }
  }

  function onProgress(p) {
    const card = document.querySelector('#running .job[data-job="' + p.job + '"]');
    if (card) { updateJob(card, p); return; }
    const box = $("running");
    box.querySelector(".empty")?.remove();
    box.append(jobCard(p));
    $("running-count").textContent = box.querySelectorAll(".job").length;
  }

  // ------------------------------------------------------------------ the rest of the state

  function renderList(id, items, empty, line) {
    const box = $(id);
    $(id + "-count").textContent = items.length;
    box.replaceChildren(...(items.length ? items.slice(0, 50).map(line) : [el("li", { class: "empty" }, empty)]));
    if (items.length > 50) box.append(el("li", { class: "empty" }, "… and " + (items.length - 50) + " more"));
  }

  function renderWorkers(w) {
    const box = $("workers");
    box.replaceChildren();
    if (!w || !w.count) { box.append(el("p", { class: "empty" }, "Workers are starting.")); return; }
    box.append(el("div", { class: "worker summary" }, w.count + " workers · " + (w.providers || []).join(", ") +
      " · executor " + w.executor + (w.restarts ? " · " + w.restarts + " restarts" : "")));
    if (w.state !== "ok") box.append(el("div", { class: "worker" }, "unavailable: " + (w.reason || w.state)));
    for (const one of w.workers || []) {
      box.append(el("div", { class: "worker" + (one.busy ? " busy" : "") }, el("span", { class: "dot" }),
        one.name + " · " + (one.busy ? "busy" : "idle") + " · " + one.tasks_done + " shards" +
        (one.memory_mb ? " · " + Math.round(one.memory_mb) + " MB" : "")));
    }
  }

  function failureCard(f) {
    const card = el("article", { class: "failure " + f.state, "data-job": f.job },
      el("div", { class: "head" }, el("h3", null, f.file, el("span", { class: "tag" }, f.state)),
        el("p", { class: "facts" }, "job " + f.job + (f.at ? " · " + when(f.at) : "")),
        el("button", { type: "button", class: "rerun", title: "run this video again (aud submit --force)" }, "Run again")),
      el("p", { class: "reason" }, f.reason),
      f.error ? el("details", null, el("summary", null, "error text"), el("pre", null, f.error)) : null);
    card.querySelector(".rerun").addEventListener("click", (ev) => post("/api/jobs/" + f.job + "/rerun", ev.target));
    return card;
  }

  function renderRuns(runs) {
    const box = $("runs");
    box.replaceChildren();
    const keys = Object.keys(runs || {});
    if (!keys.length) { box.append(el("p", { class: "empty" }, "No results yet.")); return; }
    for (const key of keys) {
      const run = runs[key];
      const rows = [];
      for (const [role, m] of Object.entries(run.models || {}))
        rows.push(el("tr", null, el("th", null, role), el("td", null, m.file), el("td", null, el("code", null, (m.sha256 || "").slice(0, 16)))));
      for (const [k, v] of Object.entries(run.options || {}).sort()) {
        if (v === null) continue;
        rows.push(el("tr", null, el("th", null, k), el("td", { colSpan: 2 }, typeof v === "string" ? v : JSON.stringify(v))));
      }
      const providers = [...new Set(Object.values(run.providers || {}))].join(", ");
      box.append(el("details", { class: "run" }, el("summary", null, "run ", el("code", null, key), providers ? " · " + providers : ""),
        el("table", { class: "kv" }, el("tbody", null, ...rows))));
    }
  }

  function renderState(s) {
    const pill = $("pill");
    const label = s.state === "ready" ? (s.paused ? "paused" : (s.workers && s.workers.state !== "ok" ? "executor_unavailable" : "running")) : s.state;
    pill.dataset.state = label === "running" ? "ready" : label;
    pill.textContent = { ready: "running", running: "running", starting: "starting: loading models", paused: "paused",
      stopping: "stopping", executor_unavailable: "workers unavailable" }[label] || label;
    const c = s.counts || {};
    $("tiles").replaceChildren(...["done", "failed", "running", "queued", "cancelled"].filter(
      (k) => c[k] || k === "done" || k === "failed").map(
      (k) => el("div", { class: "tile " + k }, el("b", null, c[k] || 0), el("span", null, k))));
    renderRunning(s.running || []);
    renderList("queued", s.queued || [], "The queue is empty.",
      (j) => el("li", null, el("span", { class: "job-id" }, "job " + j.job + " · "), j.file));
    renderList("waiting", s.waiting || [], "No file waiting.",
      (w) => el("li", null, w.file, el("span", { class: "why" }, w.reason +
        (w.fails_in_s !== null && w.fails_in_s !== undefined ? " · fails in " + duration(w.fails_in_s) : ""))));
    renderWorkers(s.workers);
    const fails = s.failures || [];
    $("failures-count").textContent = s.failures_total || 0;
    $("failures").replaceChildren(...(fails.length ? fails.map(failureCard) : [el("p", { class: "empty" }, "No failures.")]));
    renderRuns(s.runs);
    $("folders").textContent = "inbox " + s.inbox + " · outbox " + s.outbox;
    if (s.results_total !== total) { total = s.results_total; $("results-count").textContent = total; }
    updateMore();
  }

  // ------------------------------------------------------------------ results

  function resultCard(r) {
    const thumb = r.png
      ? el("a", { class: "thumb", href: fileHref(r.png), target: "_blank", rel: "noopener" },
          el("img", { src: fileHref(r.png), loading: "lazy", decoding: "async", alt: "plot of " + r.name }))
      : el("div", { class: "thumb none" }, "no plot");
    const facts = ["job " + r.job, r.frames + " frames"];
    if (r.frames_with_face !== null) facts.push("face in " + r.frames_with_face);
    if (r.fps) facts.push(r.fps.toFixed(2) + " frames/s");
    const links = el("p", { class: "links" },
      el("a", { href: fileHref(r.csv), class: "csv", download: "" }, "CSV"),
      el("a", { href: fileHref(r.json), class: "sidecar", target: "_blank", rel: "noopener" }, "sidecar"),
      r.png ? el("a", { href: fileHref(r.png), class: "png", target: "_blank", rel: "noopener" }, "PNG") : null,
      el("button", { type: "button", class: "rerun", title: "run this video again with the current settings" }, "Run again"));
    links.querySelector(".rerun").addEventListener("click", (ev) => post("/api/jobs/" + r.job + "/rerun", ev.target));
    return el("article", { class: "card result", "data-job": r.job, "data-csv": r.csv }, thumb,
      el("div", { class: "body" }, el("h3", { title: r.video }, r.name), el("p", { class: "facts" }, facts.join(" · ")),
        el("p", { class: "when" }, r.finished_at.replace("T", " ").slice(0, 16) + " · run " + r.key), links));
  }

  async function loadResults(reset) {
    if (loading) return;
    loading = true;
    try {
      const offset = reset ? 0 : shown;
      const r = await fetch("/api/results?offset=" + offset + "&limit=" + PAGE, { credentials: "same-origin" });
      if (!r.ok) return;
      const page = await r.json();
      if (reset) { $("results").replaceChildren(); shown = 0; }
      for (const item of page.results) $("results").append(resultCard(item));
      shown += page.results.length;
      total = page.total;
      $("results-count").textContent = total;
      if (!total) $("results").replaceChildren(el("p", { class: "empty" }, "No results yet."));
    } finally {
      loading = false;
      updateMore();
    }
  }

  function updateMore() { $("more").hidden = shown >= total; }

  function onResult(r) {
    const box = $("results");
    const old = box.querySelector('.result[data-csv="' + CSS.escape(r.csv) + '"]');
    if (old) old.remove(); else shown += 1;
    box.querySelector(".empty")?.remove();
    box.prepend(resultCard(r));
  }

  // ------------------------------------------------------------------ the stream

  function connect() {
    const source = new EventSource("/api/events");
    let first = true;
    source.addEventListener("state", (ev) => {
      renderState(JSON.parse(ev.data));
      if (first) { first = false; loadResults(true); }
    });
    source.addEventListener("progress", (ev) => onProgress(JSON.parse(ev.data)));
    source.addEventListener("result", (ev) => onResult(JSON.parse(ev.data)));
    source.onerror = () => {
      const pill = $("pill");
      pill.dataset.state = "offline";
      pill.textContent = "daemon not reachable: retrying";
      first = true;  // the snapshot after reconnecting reloads the results
    };
  }

  $("more").addEventListener("click", () => loadResults(false));
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && shown < total) loadResults(false);
    }, { rootMargin: "600px" }).observe($("more"));
  }
  connect();
})();
