// Time-series charts for the device page (uPlot): a series from the hub's downsampled API with
// gaps drawn as gaps (a null where time jumps by more than about two buckets, spanGaps off), a
// min/max band around the mean when the hub downsampled, a readable time axis, units on the
// value axis, and drag-to-zoom handed to the page (which fetches the zoomed window).
"use strict";

const charts = (() => {
  const GAP_BUCKETS = 2.5; // a jump in t by more than this many buckets is a gap
  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  function finiteArray(value, length) {
    if (!Array.isArray(value)) return null;
    return value.slice(0, length).map((v) => (typeof v === "number" && Number.isFinite(v) ? v : null));
  }

  // The typical spacing of raw readings: the median step of t.
  function medianStep(t) {
    if (t.length < 2) return 0;
    const steps = [];
    for (let i = 1; i < t.length; i++) steps.push(t[i] - t[i - 1]);
    steps.sort((a, b) => a - b);
    return steps[Math.floor(steps.length / 2)];
  }

  // {t, mean, min, max} (validated, t ascending) -> the same with a null row in every gap.
  function withGaps(columns, bucket) {
    const t = columns.t;
    const step = bucket > 0 ? bucket : medianStep(t);
    const out = Object.fromEntries(Object.keys(columns).map((k) => [k, []]));
    for (let i = 0; i < t.length; i++) {
      if (i > 0 && step > 0 && t[i] - t[i - 1] > GAP_BUCKETS * step) {
        for (const key of Object.keys(columns)) out[key].push(key === "t" ? t[i - 1] + step : null);
      }
      for (const key of Object.keys(columns)) out[key].push(columns[key][i]);
    }
    return out;
  }

  // A series as the hub sent it -> validated columns, sorted by time, or null.
  function clean(raw, fields) {
    if (raw === null || typeof raw !== "object" || !Array.isArray(raw.t)) return null;
    const n = Math.min(raw.t.length, 100000);
    const cols = { t: finiteArray(raw.t, n) };
    for (const field of fields) cols[field] = finiteArray(raw[field], n) || new Array(n).fill(null);
    const order = [...cols.t.keys()].filter((i) => cols.t[i] !== null).sort((a, b) => cols.t[a] - cols.t[b]);
    return Object.fromEntries(Object.entries(cols).map(([k, v]) => [k, order.map((i) => v[i])]));
  }

  function countNulls(data) {
    let nulls = 0;
    for (const column of data.slice(1)) for (const v of column) if (v === null) nulls += 1;
    return nulls;
  }

  // A readable time axis: the labels' format follows the step between ticks (what is drawn,
  // which may be much shorter than the window asked for), so no two labels read the same.
  const TICK_FORMATS = [
    [60, { hour: "2-digit", minute: "2-digit", second: "2-digit" }],
    [86400, { hour: "2-digit", minute: "2-digit" }],
    [Infinity, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }],
  ];
  function timeAxis(span) {
    return {
      space: span > 2 * 86400 ? 110 : 80,
      values: (u, splits, axis, space, step) => {
        const fmt = TICK_FORMATS.find(([below]) => step < below)[1];
        return splits.map((s) => new Date(s * 1000).toLocaleString([], fmt));
      },
    };
  }

  // Makes (or remakes) a chart in holder. data = [t, mean, (max, min)]; banded: max/min exist.
  function draw(holder, { label, unit, data, banded, colour = 0, span, height = 200, onZoom }) {
    if (holder.plot) holder.plot.destroy();
    const stroke = COLOURS[colour % COLOURS.length];
    const series = [{}, { label: unit ? `${label} (${unit})` : label, stroke, width: 1.5, spanGaps: false }];
    const opts = {
      width: Math.max(240, holder.clientWidth || 600),
      height,
      series,
      scales: { x: { time: true } },
      axes: [timeAxis(span || 3600), { label: unit || undefined, size: 60 }],
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: {
        setSelect: [(u) => {
          if (!onZoom || u.select.width < 4) return;
          const since = u.posToVal(u.select.left, "x");
          const until = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          onZoom(since, until);
        }],
      },
    };
    if (banded) {
      series.push({ label: "max", stroke: `${stroke}55`, width: 1, spanGaps: false, dash: [4, 4] });
      series.push({ label: "min", stroke: `${stroke}55`, width: 1, spanGaps: false, dash: [4, 4] });
      opts.bands = [{ series: [2, 3], fill: `${stroke}1a` }];
    }
    holder.plot = new uPlot(opts, data, holder);
    holder.dataset.points = String(data[0].length);
    holder.dataset.nulls = String(countNulls(data));
    return holder.plot;
  }

  function update(holder, data) {
    holder.plot.setData(data);
    holder.dataset.points = String(data[0].length);
    holder.dataset.nulls = String(countNulls(data));
  }

  return { withGaps, clean, draw, update, countNulls, medianStep };
})();
