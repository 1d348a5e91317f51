// The cryptolake dashboard. Every request goes to this server's own /api/v1; nothing is loaded
// from anywhere else.
"use strict";

const $ = (sel) => document.querySelector(sel);

function setStatus(text) {
  const s = $("#status");
  if (s) s.textContent = text;
}

async function api(path, options) {
  const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const text = await resp.text();
  if (!resp.ok) {
    let message = text;
    try { message = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
    throw new Error(`${resp.status}: ${message}`);
  }
  return text;
}

async function apiJson(path, options) {
  return JSON.parse(await api(path, options));
}

function cell(tr, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "—" : String(value);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function formatLag(seconds) {
  if (seconds === null || seconds === undefined) return "no complete hour";
  const m = Math.round(seconds / 60);
  if (m < 120) return `${m} min`;
  const h = Math.round(m / 60);
  if (h < 72) return `${h} h`;
  return `${Math.round(h / 24)} d`;
}

function formatTime(iso) {
  if (!iso) return null;
  return iso.replace("T", " ").replace(/(:\d\d)(\.\d+)?(\+00:00|Z)$/, "$1").slice(0, 16);
}

// A plain table from rows of objects (SQL results, runs, gaps).
function fillTable(table, rows, columns) {
  const cols = columns || (rows.length ? Object.keys(rows[0]) : []);
  const head = table.querySelector("thead");
  const body = table.querySelector("tbody");
  head.innerHTML = "";
  body.innerHTML = "";
  const htr = document.createElement("tr");
  for (const c of cols) {
    const th = document.createElement("th");
    th.textContent = c;
    htr.appendChild(th);
  }
  head.appendChild(htr);
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const c of cols) {
      const v = r[c];
      const td = cell(tr, typeof v === "object" && v !== null ? JSON.stringify(v) : v);
      if (typeof v === "number") td.className = "num";
      if (c === "status" && typeof v === "string") td.classList.add(v);
    }
    body.appendChild(tr);
  }
}

// ---- Overview ----------------------------------------------------------------------------

const overviewState = { rows: [], key: "exchange", dir: 1, funding: new Map() };

function renderOverview() {
  const body = $("#overview tbody");
  body.innerHTML = "";
  const { key, dir } = overviewState;
  const rows = overviewState.rows.slice().sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * dir;
  });
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.exchange = r.exchange;
    tr.dataset.symbol = r.symbol;
    if (r.stale) tr.classList.add("stale");
    cell(tr, r.exchange);
    const link = document.createElement("a");
    link.href = `/symbol?exchange=${encodeURIComponent(r.exchange)}&symbol=${encodeURIComponent(r.symbol)}`;
    link.textContent = r.symbol;
    const td = document.createElement("td");
    td.appendChild(link);
    tr.appendChild(td);
    cell(tr, formatTime(r.last_complete_hour));
    cell(tr, formatLag(r.lag_seconds), "num");
    for (const k of ["days_covered", "days_complete", "missing_minutes", "unconfirmed_minutes",
                     "confirmed_minutes", "unservable_minutes", "open_violations"]) {
      cell(tr, r[k], "num").dataset.field = k;
    }
    cell(tr, r.last_run_status, r.last_run_status || "");
    // A perpetual's newest funding event: its rate and how long ago it was.
    const f = overviewState.funding.get(`${r.exchange}/${r.symbol}`);
    const funded = cell(tr, f ? `${(100 * f.rate).toFixed(4)}% · ${formatLag((Date.now() - Date.parse(f.funding_slot)) / 1000)} ago` : null, "num");
    funded.dataset.field = "last_funding";
    body.appendChild(tr);
  }
  for (const th of document.querySelectorAll("#overview th")) {
    th.setAttribute("aria-sort", th.dataset.key === key ? (dir > 0 ? "ascending" : "descending") : "none");
  }
}

async function loadOverview() {
  try {
    const [data, funding] = await Promise.all([
      apiJson("/api/v1/overview"), apiJson("/api/v1/funding/latest"),
    ]);
    overviewState.rows = data.rows;
    overviewState.funding = new Map(funding.map((f) => [`${f.exchange}/${f.symbol}`, f]));
    $("#threshold").textContent = formatLag(data.freshness_threshold_seconds);
    renderOverview();
    setStatus(`updated ${formatTime(data.generated_at)} UTC`);
  } catch (e) {
    setStatus(`could not load: ${e.message}`);
  }
}

function initOverview() {
  for (const th of document.querySelectorAll("#overview th")) {
    th.addEventListener("click", () => {
      const k = th.dataset.key;
      overviewState.dir = overviewState.key === k ? -overviewState.dir : 1;
      overviewState.key = k;
      renderOverview();
    });
  }
  loadOverview();
  setInterval(loadOverview, 60000);
}

// ---- Symbol chart ------------------------------------------------------------------------

// Bar widths in seconds; months ("1M") have their own step.
const SECONDS = {
  "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
  "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800, "1M": 31 * 86400,
};

// The start of the bar after the one starting at `t` (seconds, UTC).
function nextBar(t, interval) {
  if (interval !== "1M") return t + SECONDS[interval];
  const d = new Date(t * 1000);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
}
const PAGE = 500;
const COLORS = { up: "#26a69a", down: "#ef5350", partial: "#9aa3ad" };

const chartState = {
  bars: [],          // candles, oldest first, with whitespace for the holes
  interval: "1h",
  first: null,       // the symbol's first hour in silver (seconds), to know when to stop
  last: null,        // its last hour: the first page ends there, however old the data is
  loading: false,
  exhausted: false,
  requests: 0,
};
window.cryptolake = chartState;

function toBars(rows, interval) {
  return rows.map((r) => {
    const t = Math.round(Date.parse(r.time.endsWith("Z") || r.time.includes("+") ? r.time : r.time + "Z") / 1000);
    const up = r.close >= r.open;
    const color = !r.complete ? COLORS.partial : up ? COLORS.up : COLORS.down;
    return {
      time: t, open: r.open, high: r.high, low: r.low, close: r.close, volume: r.volume,
      complete: r.complete, present: r.minutes_present, minutes: r.minutes,
      color, borderColor: color, wickColor: color,
    };
  });
}

// Candles with an empty slot for every missing period between them: holes stay holes.
function withHoles(bars, interval) {
  const out = [];
  for (const b of bars) {
    if (out.length) {
      let t = nextBar(out[out.length - 1].time, interval);
      for (let i = 0; t < b.time && i < 20000; i++, t = nextBar(t, interval)) out.push({ time: t });
    }
    out.push(b);
  }
  return out;
}

function volumeOf(bars) {
  return bars.map((b) => b.open === undefined
    ? { time: b.time }
    : { time: b.time, value: b.volume, color: b.complete ? "rgba(41,98,255,0.35)" : "rgba(154,163,173,0.5)" });
}

async function fetchBars(params) {
  const q = new URLSearchParams(Object.assign({
    exchange: chartState.exchange, symbol: chartState.symbol, interval: chartState.interval,
  }, params));
  chartState.requests += 1;
  const rows = await apiJson(`/api/v1/candles?${q}`);
  return toBars(rows, chartState.interval);
}

function iso(seconds) {
  return new Date(seconds * 1000).toISOString();
}

function showCount() {
  const n = chartState.bars.filter((b) => b.open !== undefined).length;
  $("#loaded").textContent = `${n} candles loaded` + (chartState.exhausted ? " (all history)" : "");
}

function setAll(keepView) {
  const view = keepView ? chartState.chart.timeScale().getVisibleLogicalRange() : null;
  chartState.candles.setData(chartState.bars);
  chartState.volume.setData(volumeOf(chartState.bars));
  return view;
}

// Scrolled or zoomed back to the oldest candle loaded: load the page before it, keeping what
// is on screen where it is.
async function loadOlder() {
  if (chartState.loading || chartState.exhausted || !chartState.bars.length) return;
  chartState.loading = true;
  try {
    const oldest = chartState.bars[0].time;
    if (chartState.first !== null && oldest <= chartState.first) {
      chartState.exhausted = true;
      return;
    }
    const step = SECONDS[chartState.interval];
    const older = await fetchBars({ to: iso(oldest), limit: PAGE });
    if (!older.length && chartState.first !== null && oldest - PAGE * step <= chartState.first) {
      chartState.exhausted = true;
    }
    const merged = withHoles(older.concat(chartState.bars.filter((b) => b.open !== undefined)), chartState.interval);
    // Periods before the oldest loaded one with no candle at all are holes too.
    const added = merged.length - chartState.bars.length;
    const view = chartState.chart.timeScale().getVisibleLogicalRange();
    chartState.bars = merged;
    setAll(false);
    if (view && added > 0) {
      chartState.chart.timeScale().setVisibleLogicalRange({ from: view.from + added, to: view.to + added });
    }
    if (!older.length && !chartState.exhausted) {
      // An empty page inside the history: a long hole. Step further back.
      chartState.bars.unshift({ time: oldest - PAGE * step });
    }
  } catch (e) {
    setStatus(`could not load older candles: ${e.message}`);
  } finally {
    chartState.loading = false;
    showCount();
  }
}

// New candles (and revised ones) since the newest loaded: updated in place, so the viewport
// stays where the reader left it.
async function loadNewer() {
  if (!chartState.bars.length || chartState.loading) return;
  const interval = chartState.interval;
  const real = chartState.bars.filter((b) => b.open !== undefined);
  const newest = real.length ? real[real.length - 1].time : chartState.bars[0].time;
  try {
    const fresh = await fetchBars({ from: iso(newest), limit: PAGE });
    let last = chartState.bars[chartState.bars.length - 1].time;
    for (const b of fresh) {
      while (nextBar(last, interval) < b.time) {
        last = nextBar(last, interval);
        const hole = { time: last };
        chartState.bars.push(hole);
        chartState.candles.update(hole);
        chartState.volume.update({ time: last });
      }
      if (b.time === chartState.bars[chartState.bars.length - 1].time) {
        chartState.bars[chartState.bars.length - 1] = b;
      } else if (b.time > last) {
        chartState.bars.push(b);
      } else {
        continue;
      }
      chartState.candles.update(b);
      chartState.volume.update(volumeOf([b])[0]);
      last = b.time;
    }
    setStatus(`updated ${new Date().toISOString().slice(11, 16)} UTC`);
  } catch (e) {
    setStatus(`could not refresh: ${e.message}`);
  }
  showCount();
}

async function loadInterval(interval) {
  chartState.interval = interval;
  chartState.exhausted = false;
  for (const b of document.querySelectorAll("[data-interval]")) {
    b.setAttribute("aria-pressed", String(b.dataset.interval === interval));
  }
  // The first page ends with the symbol's newest hour (the bar holding it, at any width), so a
  // lake whose data stops in the past still opens on candles.
  const end = chartState.last !== null ? { to: iso(chartState.last + SECONDS["1h"]) } : {};
  const bars = await fetchBars(Object.assign({ limit: PAGE }, end));
  chartState.bars = withHoles(bars, interval);
  setAll(false);
  // The newest candles fill the view; scrolling or zooming back loads older ones on demand.
  const n = chartState.bars.length;
  // (A short history, weeks or months, fills the view from its first bar.)
  chartState.chart.timeScale().setVisibleLogicalRange({ from: n > 170 ? n - 150 : 0, to: n + 4 });
  showCount();
  await loadPerpetual();
  if (bars.length < 60) loadOlder();
}

// ---- Perpetual markets: the mark price on the chart, funding in a pane under it ------------

const PERPETUALS = ["binance-futures", "okx-swap", "bybit-linear"];
const MARK_DAYS = 90;

// The bar of the chart holding `t` (seconds): the newest bar starting at or before it.
function barOf(t) {
  const bars = chartState.bars;
  let lo = 0, hi = bars.length - 1, found = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (bars[mid].time <= t) { found = bars[mid].time; lo = mid + 1; } else { hi = mid - 1; }
  }
  return found;
}

// The mark price's close per bar (the newest MARK_DAYS of the loaded range), and the funding
// each bar paid (the sum of its events' rates, in percent; green when longs received).
async function loadPerpetual() {
  if (!chartState.mark || !chartState.bars.length) return;
  const first = chartState.bars[0].time;
  const end = nextBar(chartState.bars[chartState.bars.length - 1].time, chartState.interval);
  const from = Math.max(first, end - MARK_DAYS * 86400);
  const base = { exchange: chartState.exchange, symbol: chartState.symbol };
  try {
    const [marks, funding] = await Promise.all([
      apiJson(`/api/v1/mark?${new URLSearchParams(Object.assign({
        interval: chartState.interval, from: iso(from), to: iso(end) }, base))}`),
      apiJson(`/api/v1/funding?${new URLSearchParams(Object.assign({
        from: iso(first), to: iso(end) }, base))}`),
    ]);
    const seconds = (s) => Math.round(Date.parse(s.endsWith("Z") || s.includes("+") ? s : s + "Z") / 1000);
    chartState.markPoints = marks.map((m) => ({ time: seconds(m.time), value: m.close }))
      .filter((p) => chartState.bars.some((b) => b.time === p.time));
    chartState.mark.setData(chartState.markPoints);
    const paid = new Map();
    for (const f of funding) {
      const t = barOf(seconds(f.funding_slot));
      if (t === null) continue;
      paid.set(t, (paid.get(t) || 0) + 100 * f.rate);
    }
    chartState.fundingPoints = [...paid.entries()].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({
      time, value, color: value >= 0 ? "rgba(239,83,80,0.7)" : "rgba(38,166,154,0.7)",
    }));
    chartState.funding.setData(chartState.fundingPoints);
    chartState.fundingEvents = funding.length;
  } catch (e) {
    setStatus(`could not load mark prices or funding: ${e.message}`);
  }
}

function showBar(bar) {
  const el = $("#crosshair");
  if (!bar) {
    el.textContent = "";
    return;
  }
  const when = new Date(bar.time * 1000).toISOString().slice(0, 16).replace("T", " ");
  const pct = bar.minutes ? (100 * bar.present / bar.minutes).toFixed(1) : "0";
  const parts = [
    ["", `${when} UTC ${chartState.interval}`], ["O", bar.open], ["H", bar.high], ["L", bar.low],
    ["C", bar.close], ["V", Number(bar.volume.toFixed(4)).toLocaleString("en-US", { maximumFractionDigits: 4 })],
    ["minutes", `${bar.present}/${bar.minutes} (${pct}%)${bar.complete ? " complete" : " incomplete"}`],
  ];
  if (chartState.mark) {
    const m = (chartState.markPoints || []).find((p) => p.time === bar.time);
    const f = (chartState.fundingPoints || []).find((p) => p.time === bar.time);
    parts.push(["mark", m ? m.value : "—"], ["funding", f ? `${f.value.toFixed(4)}%` : "—"]);
  }
  el.replaceChildren(...parts.flatMap(([k, v]) => {
    const b = document.createElement("b");
    b.textContent = String(v);
    return k ? [document.createTextNode(` ${k} `), b] : [b];
  }));
  el.dataset.time = String(bar.time);
}
window.cryptolakeShowBar = showBar;

async function initSymbol() {
  const params = new URLSearchParams(location.search);
  chartState.exchange = params.get("exchange") || "binance";
  chartState.symbol = params.get("symbol") || "BTC-USDT";
  $("#title").textContent = `${chartState.symbol} on ${chartState.exchange}`;
  document.title = `cryptolake · ${chartState.symbol} ${chartState.exchange}`;
  const container = $("#chart");
  const chart = LightweightCharts.createChart(container, {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#1d2330", attributionLogo: true },
    grid: { vertLines: { color: "#f0f3f8" }, horzLines: { color: "#f0f3f8" } },
    timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 4 },
    localization: { timeFormatter: (t) => new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" },
  });
  chartState.chart = chart;
  chartState.candles = chart.addSeries(LightweightCharts.CandlestickSeries, {
    upColor: COLORS.up, downColor: COLORS.down, borderVisible: true,
  });
  chartState.volume = chart.addSeries(LightweightCharts.HistogramSeries, {
    priceFormat: { type: "volume" }, priceLineVisible: false, lastValueVisible: false,
  }, 1);
  chart.panes()[1].setHeight(120);
  if (PERPETUALS.includes(chartState.exchange)) {
    // The mark price margin and liquidations use, as a line over the candles; funding (in %
    // of the position, per bar: red when longs paid) in its own pane.
    chartState.mark = chart.addSeries(LightweightCharts.LineSeries, {
      color: "#ff9800", lineWidth: 1, priceLineVisible: false, lastValueVisible: false, title: "mark",
    });
    chartState.funding = chart.addSeries(LightweightCharts.HistogramSeries, {
      priceFormat: { type: "custom", formatter: (v) => `${v.toFixed(4)}%` },
      priceLineVisible: false, lastValueVisible: false, title: "funding",
    }, 2);
    chart.panes()[2].setHeight(100);
    $("#perpetual").hidden = false;
  }
  // The crosshair's bar, spelled out: prices, volume and how many of its minutes are present.
  chart.subscribeCrosshairMove((param) => {
    const bar = param.time === undefined ? null : chartState.bars.find((b) => b.time === param.time);
    showBar(bar && bar.open !== undefined ? bar : null);
  });
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (range && range.from < 20) loadOlder();
  });
  for (const b of document.querySelectorAll("[data-interval]")) {
    b.addEventListener("click", () => loadInterval(b.dataset.interval));
  }
  try {
    const symbols = await apiJson("/api/v1/symbols");
    const me = symbols.find((s) => s.exchange === chartState.exchange && s.symbol === chartState.symbol);
    const seconds = (t) => Math.round(Date.parse(t.endsWith("Z") ? t : t + "Z") / 1000);
    if (me) {
      chartState.first = seconds(me.first_hour);
      chartState.last = seconds(me.last_hour);
    }
    await loadInterval(params.get("interval") || "1h");
    setStatus("loaded");
  } catch (e) {
    setStatus(`could not load: ${e.message}`);
  }
  setInterval(loadNewer, 60000);
}

// ---- Pipeline ----------------------------------------------------------------------------

async function initPipeline() {
  try {
    const [runs, quality, gaps] = await Promise.all([
      apiJson("/api/v1/runs?limit=100"),
      apiJson("/api/v1/quality?status=violation&limit=200"),
      apiJson("/api/v1/gaps?limit=500"),
    ]);
    fillTable($("#runs"), runs, ["started_at", "run_id", "step", "seconds", "status", "inputs", "outputs", "rows", "quarantined", "error"]);
    fillTable($("#quality"), quality, ["checked_at", "step", "rule", "action", "exchange", "symbol", "subject", "message"]);
    fillTable($("#gaps"), gaps, ["exchange", "symbol", "gap_start", "gap_end", "minutes", "status", "fetches"]);
    setStatus("loaded");
  } catch (e) {
    setStatus(`could not load: ${e.message}`);
  }
}

// ---- SQL ---------------------------------------------------------------------------------

async function runSql() {
  const err = $("#error");
  err.hidden = true;
  const started = performance.now();
  try {
    const rows = await apiJson("/api/v1/sql?format=json", { method: "POST", body: $("#query").value });
    fillTable($("#result"), rows);
    $("#summary").textContent = `${rows.length} rows in ${((performance.now() - started) / 1000).toFixed(2)} s`;
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  }
}

async function downloadCsv() {
  const err = $("#error");
  err.hidden = true;
  try {
    const text = await api("/api/v1/sql?format=csv", { method: "POST", body: $("#query").value });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    a.download = "cryptolake-query.csv";
    document.body.appendChild(a);
    a.click();
    a.remove();
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  }
}

function initSql() {
  $("#run").addEventListener("click", runSql);
  $("#csv").addEventListener("click", downloadCsv);
  $("#query").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runSql();
  });
}

const pages = { overview: initOverview, symbol: initSymbol, pipeline: initPipeline, sql: initSql };
(pages[document.body.dataset.page] || (() => {}))();
