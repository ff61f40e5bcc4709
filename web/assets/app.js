// The page of `flowsql serve`: a map, a timeline and a SQL view over the
// JSON API of the same server. The server aggregates; this file only draws.
//
// Every value from the server (names, addresses, cells) reaches the
// document as text: textContent, createTextNode and setAttribute on data-*
// and presentation attributes, never as markup.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2f6fb0", "#e08a1e", "#3c9a5f", "#8a5cb8", "#c0504d", "#4aa5a8", "#9b8b3e", "#7f7f7f"];
  const DIRECTION_COLOURS = { outgoing: "#2f6fb0", incoming: "#e08a1e" };

  const state = {
    view: "map",
    last: "1h",
    since: null,
    until: null,
    direction: "",
    host: "",
    port: "",
    stack: "direction",
    info: null,
    stale: { map: true, timeline: true },
    positions: new Map(),
    sqlRows: null,
    sqlPage: 0,
    chart: null,
    renders: 0,
  };
  const PAGE_ROWS = 100;

  // ---------------------------------------------------------------- helpers

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function isoMinute(ms) {
    return new Date(ms).toISOString().replace(".000Z", "Z");
  }

  function status(text) {
    $("status").textContent = text;
  }

  async function getJson(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({ message: response.statusText }));
    if (!response.ok) throw new Error(body.message || response.statusText);
    return body;
  }

  function filterQuery() {
    const q = new URLSearchParams();
    if (state.last === "custom" && state.since !== null && state.until !== null) {
      q.set("since", String(state.since));
      q.set("until", String(state.until));
    } else {
      q.set("last", state.last === "custom" ? "1h" : state.last);
    }
    if (state.direction) q.set("direction", state.direction);
    if (state.host) q.set("host", state.host);
    if (state.port !== "") q.set("port", state.port);
    return q;
  }

  // ---------------------------------------------------- state in the URL

  function readHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    if (["map", "timeline", "sql"].includes(q.get("view"))) state.view = q.get("view");
    if (q.get("since") && q.get("until")) {
      state.last = "custom";
      state.since = Number(q.get("since"));
      state.until = Number(q.get("until"));
    } else if (q.get("last")) {
      state.last = q.get("last");
    }
    state.direction = q.get("direction") || "";
    state.host = q.get("host") || "";
    state.port = q.get("port") || "";
    if (q.get("stack") === "destination") state.stack = "destination";
    return q.has("since") || q.has("last");
  }

  function writeHash() {
    const q = filterQuery();
    q.set("view", state.view);
    if (state.stack !== "direction") q.set("stack", state.stack);
    history.replaceState(null, "", "#" + q.toString());
  }

  function showFilters() {
    $("f-last").value = state.last;
    $("f-direction").value = state.direction;
    $("f-host").value = state.host;
    $("f-port").value = state.port;
    $("t-stack").value = state.stack;
    $("f-range").textContent =
      state.last === "custom" ? isoMinute(state.since) + " to " + isoMinute(state.until) : "";
  }

  // ------------------------------------------------------------- views

  function selectView(view) {
    state.view = view;
    for (const name of ["map", "timeline", "sql"]) {
      $("view-" + name).hidden = name !== view;
      $("tab-" + name).setAttribute("aria-selected", String(name === view));
    }
    $("filters").hidden = view === "sql";
    writeHash();
    if (view !== "sql" && state.stale[view]) refresh();
  }

  async function refresh() {
    const view = state.view;
    if (view === "sql") return;
    state.stale = { map: true, timeline: true };
    const started = performance.now();
    try {
      if (view === "map") await drawMap();
      else await drawTimeline();
      state.stale[view] = false;
      state.renders += 1;
      const took = performance.now() - started;
      document.body.dataset.renders = String(state.renders);
      document.body.dataset.lastRenderMs = took.toFixed(1);
      if (!document.body.dataset.firstPaintMs) document.body.dataset.firstPaintMs = performance.now().toFixed(1);
      status(view + " in " + Math.round(took) + " ms");
    } catch (error) {
      status("error: " + error.message);
    }
  }

  // --------------------------------------------------------------- map

  async function drawMap() {
    const data = await getJson("/api/map?" + filterQuery());
    const box = $("map-svg");
    const width = Math.max(box.clientWidth, 600);
    const height = Math.max(box.clientHeight, 420);
    box.setAttribute("viewBox", "0 0 " + width + " " + height);
    clear(box);

    const notes = [];
    if (data.edges.length < data.edgesTotal) notes.push("the " + data.edges.length + " heaviest of " + data.edgesTotal + " edges");
    if (!data.columns.attribution) notes.push("local nodes are cgroups (no process attribution in this store)");
    notes.push(data.columns.ends ? "edges sized by bytes, red where attempts failed or were reset" : "edges sized by flows (no connection ends in this store)");
    if (data.edges.length === 0) notes.unshift("no flows in this range");
    $("map-note").textContent = notes.join("; ");

    const nodes = data.nodes.map((n) => {
      const known = state.positions.get(n.id);
      return Object.assign({}, n, known ? { x: known.x, y: known.y } : {});
    });
    const links = data.edges.map((e) => ({
      source: "local:" + e.local,
      target: "remote:" + e.remote,
      edge: e,
    }));
    if (nodes.length > 0 && window.d3) {
      const sim = d3
        .forceSimulation(nodes)
        .force("link", d3.forceLink(links).id((d) => d.id).distance(90))
        .force("charge", d3.forceManyBody().strength(-260))
        .force("x", d3.forceX((d) => (d.kind === "local" ? width * 0.3 : width * 0.7)).strength(0.08))
        .force("y", d3.forceY(height / 2).strength(0.06))
        .stop();
      for (let i = 0; i < 300; i++) sim.tick();
    }
    // Fit the layout into the box.
    const xs = nodes.map((n) => n.x || 0);
    const ys = nodes.map((n) => n.y || 0);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    // Room for the labels: left of local nodes, right of remote ones.
    const padX = Math.min(200, width / 4);
    const padY = 30;
    const sx = (x) => (x1 > x0 ? padX + ((x - x0) / (x1 - x0)) * (width - 2 * padX) : width / 2);
    const sy = (y) => (y1 > y0 ? padY + ((y - y0) / (y1 - y0)) * (height - 2 * padY) : height / 2);
    const at = new Map();
    for (const n of nodes) {
      state.positions.set(n.id, { x: n.x, y: n.y });
      at.set(n.id, { x: sx(n.x || 0), y: sy(n.y || 0) });
    }

    const weight = (e) => (data.columns.ends ? e.bytes || 0 : e.flows);
    const heaviest = Math.max(1, ...data.edges.map(weight));
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerUnits: "userSpaceOnUse", markerWidth: "10", markerHeight: "10", orient: "auto" });
    marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }));
    defs.appendChild(marker);
    box.appendChild(defs);

    const edgeLayer = svg("g", { class: "edges" });
    for (const e of data.edges) {
      const a = at.get("local:" + e.local);
      const b = at.get("remote:" + e.remote);
      if (!a || !b) continue;
      const [from, end] = e.direction === "outgoing" ? [a, b] : [b, a];
      // Stop at the target's circle, so that the arrow head shows.
      const length = Math.hypot(end.x - from.x, end.y - from.y) || 1;
      const radius = (e.direction === "outgoing" ? 8 : 11) + 3;
      const to = { x: end.x - ((end.x - from.x) / length) * radius, y: end.y - ((end.y - from.y) / length) * radius };
      const failing = (e.failed || 0) + (e.resets || 0) > 0;
      const g = svg("g", { class: "edge" + (failing ? " failing" : ""), tabindex: "0" });
      g.dataset.local = e.local;
      g.dataset.remote = e.remote;
      g.dataset.direction = e.direction;
      g.dataset.flows = String(e.flows);
      if (e.bytes !== null) g.dataset.bytes = String(e.bytes);
      if (e.failed !== null) g.dataset.failed = String(e.failed);
      const line = svg("line", {
        x1: from.x, y1: from.y, x2: to.x, y2: to.y,
        "stroke-width": (1.5 + 7 * Math.sqrt(weight(e) / heaviest)).toFixed(2),
        "marker-end": "url(#arrow)",
      });
      const title = svg("title");
      let text = e.local + (e.direction === "outgoing" ? " \u2192 " : " \u2190 ") + e.remote + ": " + e.flows + " flows";
      if (e.bytes !== null) text += ", " + e.bytes + " bytes";
      if (e.failed) text += ", " + e.failed + " failed attempts";
      if (e.resets) text += ", " + e.resets + " resets";
      title.textContent = text;
      line.appendChild(title);
      g.appendChild(line);
      const label = svg("text", { x: ((from.x + to.x) / 2).toFixed(1), y: ((from.y + to.y) / 2 - 4).toFixed(1), class: "edge-count" });
      label.textContent = String(e.flows);
      g.appendChild(label);
      g.addEventListener("click", () => listFlows(e.local, e.remote, text));
      edgeLayer.appendChild(g);
    }
    box.appendChild(edgeLayer);

    const nodeLayer = svg("g", { class: "nodes" });
    for (const n of nodes) {
      const p = at.get(n.id);
      const g = svg("g", { class: "node " + n.kind, transform: "translate(" + p.x.toFixed(1) + "," + p.y.toFixed(1) + ")", tabindex: "0" });
      g.dataset.kind = n.kind;
      g.dataset.label = n.label;
      g.appendChild(svg("circle", { r: n.kind === "local" ? 11 : 8 }));
      const label = svg("text", { x: n.kind === "local" ? -15 : 12, y: 4, "text-anchor": n.kind === "local" ? "end" : "start" });
      label.textContent = n.label;
      g.appendChild(label);
      g.addEventListener("click", () =>
        n.kind === "local" ? listFlows(n.label, null, n.label) : listFlows(null, n.label, n.label)
      );
      nodeLayer.appendChild(g);
    }
    box.appendChild(nodeLayer);
    box.dataset.nodes = String(nodes.length);
    box.dataset.edges = String(data.edges.length);
  }

  async function listFlows(local, remote, title) {
    const q = filterQuery();
    if (local !== null) q.set("local", local);
    if (remote !== null) q.set("remote", remote);
    $("details-title").textContent = title;
    const table = await getJson("/api/flows?" + q).catch((e) => ({ columns: ["error"], rows: [[e.message]] }));
    fillTable($("details-table"), table.columns, table.rows);
  }

  // ---------------------------------------------------------- timeline

  async function drawTimeline() {
    const q = filterQuery();
    q.set("stack", state.stack);
    const data = await getJson("/api/timeline?" + q);
    const names = data.series.map((s) => (s.name === null ? "(other destinations)" : s.name));
    const colour = (i) =>
      state.stack === "direction" ? DIRECTION_COLOURS[data.series[i].name] || COLOURS[i % COLOURS.length] : COLOURS[i % COLOURS.length];

    // Stack: each band is drawn as the sum of itself and those below it,
    // the top band first so that the lower ones cover it.
    const xs = data.buckets.map((t) => t / 1000);
    const sums = [];
    let running = data.buckets.map(() => 0);
    for (const s of data.series) {
      running = running.map((v, i) => v + s.counts[i]);
      sums.push(running);
    }
    const order = sums.map((_, i) => i).reverse();
    const chartData = [xs].concat(order.map((i) => sums[i]));
    const series = [{}].concat(
      order.map((i) => ({
        label: names[i],
        stroke: colour(i),
        fill: colour(i),
        width: 0,
        paths: uPlot.paths.bars({ size: [0.92, 40], align: 1 }),
        points: { show: false },
      }))
    );
    if (data.failed) {
      chartData.push(data.failed);
      series.push({ label: "failed attempts", stroke: "#d62728", width: 2, points: { show: false } });
    }

    const holder = $("timeline-chart");
    if (state.chart) state.chart.destroy();
    clear(holder);
    const bucketMs = data.bucketMs;
    state.chart = new uPlot(
      {
        width: Math.max(holder.clientWidth, 600),
        height: 320,
        legend: { show: false },
        cursor: { drag: { x: true, y: false, setScale: false } },
        scales: { x: { time: true, range: [data.range.since / 1000, data.range.until / 1000] } },
        axes: [{}, { label: "flows per " + (bucketMs / 60000) + " min", size: 60 }],
        series: series,
        hooks: {
          setSelect: [
            (u) => {
              if (u.select.width < 4) return;
              const since = Math.floor(u.posToVal(u.select.left, "x") * 1000);
              const until = Math.ceil(u.posToVal(u.select.left + u.select.width, "x") * 1000);
              u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
              zoomTo(since, until);
            },
          ],
        },
      },
      chartData,
      holder
    );

    const legend = $("timeline-legend");
    clear(legend);
    data.series.forEach((s, i) => {
      const item = el("li");
      const swatch = el("span", null, "swatch");
      swatch.style.background = colour(i);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(names[i] + " (" + s.counts.reduce((a, b) => a + b, 0) + ")"));
      legend.appendChild(item);
    });
    $("timeline-note").textContent = data.failed
      ? "failed connection attempts (refused, timed out, unreachable) in red"
      : "failed attempts need connection ends, which this store does not have";

    const header = ["bucket"].concat(names);
    if (data.failed) header.push("failed attempts");
    const rows = [];
    data.buckets.forEach((t, i) => {
      const counts = data.series.map((s) => s.counts[i]);
      const failed = data.failed ? [data.failed[i]] : [];
      if (counts.some((c) => c > 0) || failed.some((c) => c > 0))
        rows.push([isoMinute(t)].concat(counts.map(String), failed.map(String)));
    });
    fillTable($("timeline-table"), header, rows);
    holder.dataset.buckets = String(data.buckets.length);
    holder.dataset.bucketMs = String(bucketMs);
  }

  function zoomTo(since, until) {
    state.last = "custom";
    state.since = since;
    state.until = Math.max(until, since + 60000);
    showFilters();
    writeHash();
    refresh();
  }

  // --------------------------------------------------------------- SQL

  function fillTable(table, columns, rows) {
    clear(table);
    const head = el("thead");
    const tr = el("tr");
    for (const c of columns) tr.appendChild(el("th", c));
    head.appendChild(tr);
    table.appendChild(head);
    const body = el("tbody");
    for (const row of rows) {
      const r = el("tr");
      for (const cell of row) {
        const td = el("td", cell === null ? "NULL" : cell);
        if (cell === null) td.className = "null";
        r.appendChild(td);
      }
      body.appendChild(r);
    }
    table.appendChild(body);
  }

  function showSqlPage() {
    const result = state.sqlRows;
    const pages = Math.max(1, Math.ceil(result.rows.length / PAGE_ROWS));
    state.sqlPage = Math.min(Math.max(state.sqlPage, 0), pages - 1);
    const start = state.sqlPage * PAGE_ROWS;
    fillTable($("sql-table"), result.columns, result.rows.slice(start, start + PAGE_ROWS));
    $("sql-pager").hidden = pages <= 1;
    $("sql-page").textContent = "page " + (state.sqlPage + 1) + " of " + pages;
  }

  function showSqlError(error) {
    const box = $("sql-error");
    let text = error.message;
    if (error.line && error.column) {
      text += " (line " + error.line + ", column " + error.column + ")";
      const editor = $("sql-editor");
      const lines = editor.value.split("\n");
      let offset = 0;
      for (let i = 0; i < error.line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
      offset += error.column - 1;
      editor.focus();
      editor.setSelectionRange(offset, Math.min(offset + 1, editor.value.length));
    }
    box.textContent = text;
    box.hidden = false;
    box.dataset.kind = error.kind || "";
  }

  async function postSql(path) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql: $("sql-editor").value }),
    });
  }

  async function runSql() {
    $("sql-error").hidden = true;
    $("sql-meta").textContent = "running...";
    clear($("sql-table"));
    $("sql-pager").hidden = true;
    const response = await postSql("/api/sql");
    const body = await response.json().catch(() => ({ message: response.statusText }));
    if (!response.ok) {
      $("sql-meta").textContent = "";
      showSqlError(body);
      return;
    }
    state.sqlRows = body;
    state.sqlPage = 0;
    $("sql-meta").textContent = body.rowCount + (body.rowCount === 1 ? " row" : " rows") + " in " + Math.round(body.elapsedMs) + " ms";
    showSqlPage();
  }

  async function download(kind) {
    $("sql-error").hidden = true;
    const response = await postSql("/api/sql/" + kind);
    if (!response.ok) {
      showSqlError(await response.json().catch(() => ({ message: response.statusText })));
      return;
    }
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "flowsql." + kind;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // Completion: the word before the caret, against the shell's words.
  function currentWord() {
    const editor = $("sql-editor");
    const before = editor.value.slice(0, editor.selectionStart);
    const match = /[A-Za-z_][A-Za-z0-9_]*$/.exec(before);
    return match ? match[0] : "";
  }

  function candidates(prefix) {
    if (!prefix || !state.info) return [];
    const lower = prefix.toLowerCase();
    return state.info.words.filter((w) => w.toLowerCase().startsWith(lower)).slice(0, 12);
  }

  function insertWord(word) {
    const editor = $("sql-editor");
    const prefix = currentWord();
    const start = editor.selectionStart - prefix.length;
    editor.setRangeText(word, start, editor.selectionStart, "end");
    $("sql-completions").hidden = true;
    editor.focus();
  }

  function showCompletions() {
    const list = $("sql-completions");
    const words = candidates(currentWord());
    clear(list);
    for (const word of words) {
      const item = el("li", word);
      item.addEventListener("mousedown", (e) => {
        e.preventDefault();
        insertWord(word);
      });
      list.appendChild(item);
    }
    list.hidden = words.length === 0;
    return words;
  }

  function commonPrefix(words) {
    let prefix = words[0] || "";
    for (const w of words) while (!w.toLowerCase().startsWith(prefix.toLowerCase())) prefix = prefix.slice(0, -1);
    return prefix;
  }

  function onEditorKey(event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      runSql();
    } else if (event.key === "Tab") {
      const words = showCompletions();
      if (words.length === 0) return;
      event.preventDefault();
      const word = words.length === 1 ? words[0] : commonPrefix(words);
      if (word.length > currentWord().length) insertWord(word);
      if (words.length > 1) showCompletions();
    } else if (event.key === "Escape") {
      $("sql-completions").hidden = true;
    }
  }

  // -------------------------------------------------------------- live

  function follow() {
    const events = new EventSource("/api/events");
    let pending = false;
    events.addEventListener("flows", () => {
      $("live").hidden = false;
      if (state.last === "custom") return;
      state.stale = { map: true, timeline: true };
      if (pending) return;
      pending = true;
      setTimeout(() => {
        pending = false;
        refresh();
      }, 50);
    });
  }

  // -------------------------------------------------------------- start

  async function start() {
    const chosen = readHash();
    showFilters();
    for (const button of document.querySelectorAll("#tabs button"))
      button.addEventListener("click", () => selectView(button.dataset.view));
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      const last = $("f-last").value;
      if (last !== "custom") {
        state.last = last;
        state.since = state.until = null;
      }
      state.direction = $("f-direction").value;
      state.host = $("f-host").value.trim();
      state.port = $("f-port").value.trim();
      showFilters();
      writeHash();
      refresh();
    });
    $("f-last").addEventListener("change", () => $("filters").requestSubmit());
    $("f-direction").addEventListener("change", () => $("filters").requestSubmit());
    $("f-latest").addEventListener("click", () => showLatest(true));
    $("t-stack").addEventListener("change", () => {
      state.stack = $("t-stack").value;
      writeHash();
      refresh();
    });
    $("sql-run").addEventListener("click", runSql);
    $("sql-csv").addEventListener("click", () => download("csv"));
    $("sql-parquet").addEventListener("click", () => download("parquet"));
    $("sql-prev").addEventListener("click", () => { state.sqlPage -= 1; showSqlPage(); });
    $("sql-next").addEventListener("click", () => { state.sqlPage += 1; showSqlPage(); });
    const editor = $("sql-editor");
    editor.addEventListener("keydown", onEditorKey);
    editor.addEventListener("input", () => { if (!$("sql-completions").hidden) showCompletions(); });
    editor.addEventListener("blur", () => { $("sql-completions").hidden = true; });
    if (!editor.value) editor.value = "SELECT connectionDirection, dstIP, dstPort, dstDomains, count(*) AS flows\nFROM flows\nGROUP BY ALL ORDER BY flows DESC LIMIT 20";

    try {
      state.info = await getJson("/api/info");
    } catch (error) {
      status("error: " + error.message);
    }
    if (state.info && state.info.capturing) $("live").hidden = false;
    // A store whose flows are older than the default window opens on its
    // newest hour rather than on an empty one.
    if (!chosen) await showLatest(false);
    selectView(state.view);
    document.body.dataset.ready = "true";
    follow();
  }

  async function showLatest(always) {
    if (always) state.info = await getJson("/api/info").catch(() => state.info);
    const newest = state.info && state.info.newest;
    if (newest === null || newest === undefined) return;
    if (!always && newest >= Date.now() - 3600000) return;
    const until = (Math.floor(newest / 60000) + 1) * 60000;
    state.last = "custom";
    state.since = until - 3600000;
    state.until = until;
    showFilters();
    writeHash();
    if (always) refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
