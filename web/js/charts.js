// Charts on uPlot (served by gppd from web/node_modules, loaded as a
// classic script before the modules: window.uPlot).  Each chart is a
// <figure> with a caption and a text summary for screen readers; the canvas
// itself is hidden from them.  Charts follow their container's width.

import { h, replace, fmtValue } from './dom.js';

// Calm, distinguishable on white and on dark grey (Okabe–Ito based).
export const PALETTE = ['#2f6fb0', '#d1762b', '#2b9b78', '#b8497d', '#7a6bb8', '#8c7a2b', '#3a9fc4', '#6b6b6b'];

function css(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

function axisStyle() {
  const stroke = css('--fg-muted', '#5b6575');
  const grid = css('--grid', '#e6e9ee');
  return { stroke, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: '12px system-ui, sans-serif' };
}

function chartHeight() {
  return window.matchMedia('(max-width: 600px)').matches ? 200 : 240;
}

function compactTick(v) {
  if (v === null || v === undefined) return '';
  const a = Math.abs(v);
  if (a >= 1e9) return +(v / 1e9).toPrecision(3) + 'G';
  if (a >= 1e6) return +(v / 1e6).toPrecision(3) + 'M';
  if (a >= 1e3) return +(v / 1e3).toPrecision(3) + 'k';
  if (a !== 0 && a < 1e-3) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

/** A scale range with 8 % room on each side (markers at the ends stay whole). */
function padded(u, min, max) {
  if (min === null || max === null) return [0, 1];
  const span = max - min || Math.abs(max) || 1;
  return [min - span * 0.08, max + span * 0.08];
}

/**
 * Align several (x[], y[]) series on one ascending x axis for uPlot.
 * Returns [xs, ys1, ys2, ...] with null where a series has no point.
 */
export function alignSeries(list) {
  const xs = new Set();
  for (const s of list) for (const x of s.x) if (x !== null && Number.isFinite(x)) xs.add(x);
  const xa = [...xs].sort((a, b) => a - b);
  const index = new Map(xa.map((x, i) => [x, i]));
  const out = [xa];
  for (const s of list) {
    const ya = new Array(xa.length).fill(null);
    for (let i = 0; i < s.x.length; i++) {
      const k = index.get(s.x[i]);
      if (k !== undefined) {
        const v = s.y[i];
        ya[k] = v === null || v === undefined || !Number.isFinite(v) ? null : v;
      }
    }
    out.push(ya);
  }
  return out;
}

/** Summary text of series: count and last / min / max of each. */
function summarise(title, list, xLabel, xValue) {
  const at = (x) => (xValue ? xValue(x) : `${xLabel} ${fmtValue(x)}`);
  const withPts = list.filter((s) => s.y.some((v) => v !== null && Number.isFinite(v)));
  if (!withPts.length) return `${title}: no points yet.`;
  const parts = withPts.map((s) => {
    let last = null;
    let lastX = null;
    let min = Infinity;
    let max = -Infinity;
    let n = 0;
    for (let i = 0; i < s.y.length; i++) {
      const v = s.y[i];
      if (v === null || !Number.isFinite(v)) continue;
      n++;
      last = v;
      lastX = s.x[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    return `${s.label}: ${n} points, latest ${fmtValue(last)} at ${at(lastX)}, range ${fmtValue(min)} to ${fmtValue(max)}`;
  });
  return `${title}. ${parts.join('; ')}.`;
}

/** Dashed vertical lines with a label at the top, inside the plot area. */
function drawMarks(u, marks) {
  if (!marks || !marks.length) return;
  const { ctx, bbox } = u;
  const [lo, hi] = [u.scales.x.min, u.scales.x.max];
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.strokeStyle = css('--fg-muted', '#5b6575');
  ctx.fillStyle = ctx.strokeStyle;
  ctx.globalAlpha = 0.55;
  ctx.lineWidth = dpr;
  ctx.setLineDash([4 * dpr, 4 * dpr]);
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  const rowEnd = [-Infinity, -Infinity, -Infinity]; // labels in up to three rows
  for (const m of marks) {
    if (!(m.x > lo && m.x <= hi)) continue;
    const px = Math.round(u.valToPos(m.x, 'x', true));
    ctx.beginPath();
    ctx.moveTo(px, bbox.top);
    ctx.lineTo(px, bbox.top + bbox.height);
    ctx.stroke();
    // a label in the first row where it does not run into the one before
    const w = ctx.measureText(m.label || '').width;
    const x0 = px + 3 * dpr;
    const row = rowEnd.findIndex((end) => x0 > end);
    if (m.label && row >= 0 && x0 + w < bbox.left + bbox.width) {
      ctx.fillText(m.label, x0, bbox.top + (2 + 13 * row) * dpr);
      rowEnd[row] = x0 + w + 6 * dpr;
    }
  }
  ctx.restore();
}

/**
 * A line chart in `container`.  opts: {title, xLabel, yLabel, points (bool:
 * draw markers), series: [{label, x, y, color?, dash?, points?, width?}],
 * xLog, yFormat, stepped (hold each value until the next point: counts that
 * change in steps), xValue (x as the legend shows it), xLegend (the x's
 * name in the legend, default xLabel), marks (a function
 * returning [{x, label}]: dashed vertical lines, e.g. where stages start)}.
 * Returns {update(series), destroy(), figure}.
 */
export function lineChart(container, opts) {
  const xLabel = opts.xLabel || 'iteration';
  const caption = h('figcaption.chart-title', opts.title);
  const plot = h('div.chart-plot', { 'aria-hidden': 'true' });
  const summary = h('p.chart-summary.sr-only');
  const emptyNote = h('p.chart-empty', { hidden: true }, opts.emptyText || 'No points yet.');
  const figure = h('figure.chart', { role: 'group', 'aria-label': opts.title }, caption, plot, emptyNote, summary);
  container.append(figure);

  let u = null;
  let current = opts.series || [];
  let shape = '';

  function build(list) {
    if (u) {
      u.destroy();
      u = null;
    }
    plot.replaceChildren();
    const ax = axisStyle();
    const uPlot = window.uPlot;
    if (!uPlot) {
      plot.append(h('p.notice.notice-error', 'The charting library did not load (web/node_modules missing? run deploy/install-deps.sh).'));
      return;
    }
    const width = Math.max(200, plot.clientWidth || container.clientWidth || 600);
    const xValue = opts.xValue || fmtValue;
    const stepped = opts.stepped && uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined;
    const series = [{ label: opts.xLegend || xLabel, value: (self, v) => (v === null ? '–' : xValue(v)) }].concat(list.map((s, i) => ({
      label: s.label,
      stroke: s.color || PALETTE[i % PALETTE.length],
      width: s.width || 1.5,
      dash: s.dash,
      spanGaps: true,
      points: s.points
        ? {
          show: true,
          size: s.pointSize || 6,
          width: s.pointWidth || 1,
          fill: s.fill || s.color || PALETTE[i % PALETTE.length],
          stroke: s.color || PALETTE[i % PALETTE.length],
        }
        : { show: false },
      paths: s.noLine ? () => null : stepped,
      value: (self, v) => (v === null ? '–' : fmtValue(v)),
    })));
    u = new uPlot({
      width,
      height: chartHeight(),
      series,
      scales: {
        x: { time: false, distr: opts.xLog ? 3 : 1, range: opts.pad ? padded : undefined },
        y: { auto: true, range: opts.pad ? padded : undefined },
      },
      axes: [
        { ...ax, label: xLabel, labelSize: 18, values: (self, ticks) => ticks.map(compactTick) },
        { ...ax, label: opts.yLabel || '', labelSize: opts.yLabel ? 18 : 0, size: 62, values: (self, ticks) => ticks.map(opts.yFormat || compactTick) },
      ],
      legend: { show: true, live: true },
      cursor: { drag: { x: true, y: false } },
      hooks: opts.marks ? { draw: [(self) => drawMarks(self, opts.marks())] } : {},
    }, alignSeries(list), plot);
    shape = list.map((s) => s.label).join('\u0000');
  }

  function update(list) {
    current = list;
    const hasPts = list.some((s) => s.y.some((v) => v !== null && Number.isFinite(v)));
    emptyNote.hidden = hasPts;
    plot.hidden = !hasPts;
    summary.textContent = summarise(opts.title, list, xLabel, opts.xValue);
    if (!hasPts) return;
    const newShape = list.map((s) => s.label).join('\u0000');
    if (!u || newShape !== shape) build(list);
    else u.setData(alignSeries(list));
  }

  const ro = new ResizeObserver(() => {
    if (!u) return;
    const w = Math.max(200, plot.clientWidth);
    if (Math.abs(w - u.width) > 1) u.setSize({ width: w, height: chartHeight() });
  });
  ro.observe(plot);

  update(current);
  return {
    figure,
    update,
    destroy() {
      ro.disconnect();
      if (u) u.destroy();
      u = null;
    },
  };
}

/**
 * Bars of per-layer widths: for each layer, the "before" and "after" widths
 * as two horizontal bars with their numbers (plain HTML/CSS: readable by
 * screen readers as a table).  layers: [{name, kind, before, after}].
 */
export function widthBars(container, layers, { beforeLabel = 'before', afterLabel = 'after' } = {}) {
  const max = Math.max(1, ...layers.map((l) => Math.max(l.before || 0, l.after || 0)));
  const rows = layers.map((l) => {
    const pct = (v) => `${((v || 0) / max) * 100}%`;
    const kept = l.before ? Math.round(((l.after ?? l.before) / l.before) * 100) : null;
    return h('tr',
      h('th', { scope: 'row' }, h('span.layer-name', l.name), l.kind ? h('span.sub', l.kind) : null),
      h('td.bars',
        h('div.bar.bar-before', { 'aria-hidden': 'true' }, h('span', { class: 'bar-fill', 'data-w': pct(l.before) })),
        h('div.bar.bar-after', { 'aria-hidden': 'true' }, h('span', { class: 'bar-fill', 'data-w': pct(l.after) }))),
      h('td.num', `${l.before ?? '–'} → ${l.after ?? '–'}`),
      h('td.num', kept === null ? '–' : `${kept} %`));
  });
  const table = h('table.data.width-table',
    h('caption.sr-only', `Per-layer widths, ${beforeLabel} and ${afterLabel}`),
    h('thead', h('tr',
      h('th', { scope: 'col' }, 'Layer'),
      h('th', { scope: 'col' }, h('span.legend-key.key-before', { 'aria-hidden': 'true' }), ` ${beforeLabel} `,
        h('span.legend-key.key-after', { 'aria-hidden': 'true' }), ` ${afterLabel}`),
      h('th.num', { scope: 'col' }, 'width'),
      h('th.num', { scope: 'col' }, 'kept'))),
    h('tbody', rows));
  replace(container, h('div.table-wrap', table));
  // Widths are set through the CSSOM (allowed by the page's CSP, unlike style attributes).
  for (const s of container.querySelectorAll('.bar-fill')) s.style.width = s.dataset.w;
  return table;
}
