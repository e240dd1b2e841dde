/**
 * balance-report.html: one self-contained page (inline CSS and inline SVG, no scripts, no external references) that
 * shows the balance report: summary numbers, per-layer MaxVio and σ (natural vs used), layer × expert heatmaps of
 * token share (used and natural routing), the selection-bias trajectory per layer, and the under-calibrated experts.
 *
 * Sized for 4–64 layers and 8–256 experts within a 1200 px wide page: heatmap cells, bar widths and label spacing
 * scale with the counts. Deterministic: the same report gives the same string.
 */
import { definitionItems, finite, int, LAYER_TABLE_HEADER, layerTableRow, num, pct, ratio, underCalibrated } from './format.js';
import type { BalanceReport, BalanceStats, BalanceSummary, LayerBalance } from './types.js';

/** Usable width inside the page's 1200 px column (padding excluded). */
const CONTENT_W = 1140;
const NATURAL_COLOUR = '#a3adb8';
const USED_COLOUR = '#2f6fb0';
const ZERO_COLOUR = '#111111';
/** RdBu (reversed): below-uniform share blue, uniform white, above-uniform red. */
const STOPS: [number, number, number][] = [
  [0x21, 0x66, 0xac],
  [0x67, 0xa9, 0xcf],
  [0xd1, 0xe5, 0xf0],
  [0xf7, 0xf7, 0xf7],
  [0xfd, 0xdb, 0xc7],
  [0xef, 0x8a, 0x62],
  [0xb2, 0x18, 0x2b],
];
/** Cap on the points drawn across all bias-trajectory lines, to keep the file small for 64 × 256 experts. */
const MAX_TRAJECTORY_POINTS = 200_000;

/** Escape text for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
const esc = escapeHtml;

/** Coordinate with at most one decimal. */
function c1(x: number): string {
  return String(Math.round(x * 10) / 10);
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/** Round tick values covering [lo, hi] (1, 2, 2.5, 5 × 10^k steps). */
function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.5;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  const start = Math.floor(lo / step + 1e-9);
  const end = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let k = start; k <= end; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** Smallest label stride from 1, 2, 5, 10, 20, 50, … that keeps labels at least `minGap` px apart. */
function labelStride(spacing: number, minGap: number): number {
  const need = Math.ceil(minGap / Math.max(spacing, 1e-9));
  for (let m = 1; ; m *= 10) for (const s of [1, 2, 5]) if (s * m >= need) return s * m;
}

function svgText(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${c1(x)}" y="${c1(y)}"${attrs ? ` ${attrs}` : ''}>${esc(s)}</text>`;
}

// ---------------------------------------------------------------------------------------------------- bar charts

interface Series {
  name: string;
  colour: string;
  values: (number | undefined)[];
}

function groupedBarChart(id: string, title: string, layers: number[], series: Series[]): string {
  const n = layers.length;
  const ml = 58;
  const mr = 12;
  const mt = 34;
  const mb = 42;
  const plotW = clamp(n * 26 * series.length + 24, 440, CONTENT_W - ml - mr);
  const plotH = 190;
  const W = ml + plotW + mr;
  const H = mt + plotH + mb;
  const all = series.flatMap((s) => s.values).filter((v): v is number => v !== undefined);
  const ticks = niceTicks(0, Math.max(0, ...all), 5);
  const yMax = ticks[ticks.length - 1]!;
  const y = (v: number) => mt + plotH - (v / yMax) * plotH;
  const groupW = plotW / Math.max(n, 1);
  const barW = Math.min(26, (groupW * 0.8) / series.length);
  const out: string[] = [];
  out.push(`<svg id="${id}" class="chart bars" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`);
  out.push(svgText(ml, 14, title, 'class="chart-title"'));
  // grid and y axis
  out.push('<g class="grid">');
  for (const t of ticks) out.push(`<line x1="${ml}" x2="${ml + plotW}" y1="${c1(y(t))}" y2="${c1(y(t))}"/>`);
  out.push('</g><g class="axis">');
  for (const t of ticks) out.push(svgText(ml - 6, y(t) + 4, num(t, 3), 'text-anchor="end"'));
  out.push(`<line x1="${ml}" x2="${ml}" y1="${mt}" y2="${mt + plotH}"/>`);
  out.push(`<line x1="${ml}" x2="${ml + plotW}" y1="${mt + plotH}" y2="${mt + plotH}"/>`);
  const stride = labelStride(groupW, 26);
  layers.forEach((layer, i) => {
    if (i % stride !== 0) return;
    const cx = ml + (i + 0.5) * groupW;
    out.push(`<line x1="${c1(cx)}" x2="${c1(cx)}" y1="${mt + plotH}" y2="${mt + plotH + 4}"/>`);
    out.push(svgText(cx, mt + plotH + 16, String(layer), 'text-anchor="middle"'));
  });
  out.push(svgText(ml + plotW / 2, H - 6, 'MoE layer', 'text-anchor="middle" class="axis-title"'));
  out.push('</g>');
  // bars
  out.push('<g class="bars">');
  layers.forEach((layer, i) => {
    const x0 = ml + (i + 0.5) * groupW - (barW * series.length) / 2;
    series.forEach((s, j) => {
      const v = s.values[i];
      if (v === undefined) return;
      const top = y(Math.max(0, v));
      out.push(
        `<rect x="${c1(x0 + j * barW)}" y="${c1(top)}" width="${c1(Math.max(barW - (barW > 4 ? 1 : 0), 0.5))}" height="${c1(mt + plotH - top)}" fill="${s.colour}">` +
          `<title>layer ${layer}, ${esc(s.name)}: ${num(v)}</title></rect>`,
      );
    });
  });
  out.push('</g>');
  // legend
  let lx = ml + plotW;
  const legend: string[] = [];
  for (const s of [...series].reverse()) {
    const w = 18 + s.name.length * 6.5 + 14;
    lx -= w;
    legend.push(`<rect x="${c1(lx)}" y="6" width="12" height="12" fill="${s.colour}"/>` + svgText(lx + 17, 16, s.name));
  }
  out.push(`<g class="legend">${legend.join('')}</g>`);
  out.push('</svg>');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------- heatmaps

function hex(v: number): string {
  return Math.round(v).toString(16).padStart(2, '0');
}

/** Colour for t in [−1, 1] on the diverging scale. */
function divergingColour(t: number): string {
  const p = ((clamp(t, -1, 1) + 1) / 2) * (STOPS.length - 1);
  const i = Math.min(Math.floor(p), STOPS.length - 2);
  const f = p - i;
  const a = STOPS[i]!;
  const b = STOPS[i + 1]!;
  return `#${hex(a[0] + (b[0] - a[0]) * f)}${hex(a[1] + (b[1] - a[1]) * f)}${hex(a[2] + (b[2] - a[2]) * f)}`;
}

/** Token share of expert e, from the report's share or else tokens / Σ tokens. */
function shareOf(s: BalanceStats, e: number): number | undefined {
  const v = finite(s.share[e]);
  if (v !== undefined) return v;
  const total = s.tokens.reduce((a, b) => a + (finite(b) ?? 0), 0);
  const t = finite(s.tokens[e]);
  return total > 0 && t !== undefined ? t / total : undefined;
}

/**
 * Half-range K of the colour scale in powers of two (share × experts from 2^−K to 2^K): the 99th percentile of
 * |log2(share × experts)| over both heatmaps, so that one starved expert does not wash out the rest (it is drawn
 * at the end of the scale), rounded up to 1..4.
 */
function scaleRange(layers: LayerBalance[]): number {
  const v: number[] = [];
  for (const l of layers) {
    for (const s of [l.natural, l.used]) {
      for (let e = 0; e < l.experts; e++) {
        const sh = shareOf(s, e);
        if ((finite(s.tokens[e]) ?? 0) > 0 && sh !== undefined && sh > 0) v.push(Math.abs(Math.log2(sh * l.experts)));
      }
    }
  }
  if (v.length === 0) return 1;
  v.sort((a, b) => a - b);
  return clamp(Math.ceil(v[Math.floor(0.99 * (v.length - 1))]! - 1e-9), 1, 4);
}

function cellColour(tokens: number, share: number | undefined, experts: number, K: number): string {
  if (tokens <= 0 || share === undefined || share <= 0) return ZERO_COLOUR;
  return divergingColour(Math.log2(share * experts) / K);
}

function fraction(k: number): string {
  return k >= 0 ? `${2 ** k}×` : `1/${2 ** -k}×`;
}

function colourLegend(K: number): string {
  const w = 420;
  const x0 = 24;
  const W = x0 + w + 120;
  const H = 46;
  const steps = 64;
  const out: string[] = [`<svg class="colour-legend" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="colour scale">`];
  out.push(svgText(x0, 11, 'token share ÷ uniform share (1/experts), log scale'));
  for (let i = 0; i < steps; i++) {
    const t = ((i + 0.5) / steps) * 2 - 1;
    out.push(`<rect x="${c1(x0 + (i * w) / steps)}" y="16" width="${c1(w / steps + 0.6)}" height="12" fill="${divergingColour(t)}"/>`);
  }
  out.push('<g class="axis">');
  for (let k = -K; k <= K; k++) {
    const x = x0 + ((k / K + 1) / 2) * w;
    out.push(`<line x1="${c1(x)}" x2="${c1(x)}" y1="28" y2="32"/>`);
    out.push(svgText(x, 43, fraction(k), 'text-anchor="middle"'));
  }
  out.push('</g>');
  out.push(`<rect x="${x0 + w + 28}" y="16" width="12" height="12" fill="${ZERO_COLOUR}"/>`);
  out.push(svgText(x0 + w + 45, 26, '0 tokens'));
  out.push('</svg>');
  return out.join('');
}

function heatmap(report: BalanceReport, which: 'used' | 'natural', K: number): string {
  const layers = report.layers;
  const n = layers.length;
  const maxE = Math.max(1, ...layers.map((l) => l.experts));
  const ml = 54;
  const mt = 34;
  const mr = 8;
  const mb = 8;
  const cellW = clamp(Math.floor((CONTENT_W - ml - mr) / maxE), 3, 32);
  const cellH = clamp(Math.min(cellW, Math.floor(900 / Math.max(n, 1))), 8, 24);
  const gap = cellW >= 8 ? 1 : 0;
  const W = ml + maxE * cellW + mr;
  const H = mt + n * cellH + mb;
  const cls = which === 'used' ? 'cell' : 'cell-natural';
  const out: string[] = [];
  out.push(
    `<svg id="heatmap-${which}" class="heatmap" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="token share per layer and expert, ${which} routing">`,
  );
  out.push('<g class="axis">');
  out.push(svgText(ml, 11, 'expert →'));
  out.push(svgText(ml - 6, mt - 6, 'layer ↓', 'text-anchor="end"'));
  const eStride = labelStride(cellW, 24);
  for (let e = 0; e < maxE; e += eStride) out.push(svgText(ml + (e + 0.5) * cellW, mt - 6, String(e), 'text-anchor="middle"'));
  const lStride = labelStride(cellH, 12);
  layers.forEach((l, i) => {
    if (i % lStride === 0) out.push(svgText(ml - 6, mt + (i + 0.5) * cellH + 4, String(l.layer), 'text-anchor="end"'));
  });
  out.push('</g>');
  out.push(`<g class="cells">`);
  layers.forEach((l, i) => {
    const s = which === 'used' ? l.used : l.natural;
    const y = mt + i * cellH;
    for (let e = 0; e < l.experts; e++) {
      const tokens = finite(s.tokens[e]) ?? 0;
      const share = shareOf(s, e);
      const rel = share === undefined ? undefined : share * l.experts;
      const tip =
        `layer ${l.layer} expert ${e}, ${which}\n` +
        `tokens ${int(tokens)}\n` +
        `share ${pct(share)} (${num(rel, 3)}× uniform)\n` +
        `mean affinity ${num(s.mean_affinity[e])}`;
      out.push(
        `<rect class="${cls}" data-layer="${l.layer}" data-expert="${e}" x="${ml + e * cellW}" y="${y}" width="${cellW - gap}" height="${cellH - gap}" fill="${cellColour(tokens, share, l.experts, K)}"><title>${esc(tip)}</title></rect>`,
      );
    }
  });
  out.push('</g></svg>');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------- bias trajectories

/** Indices 0..B−1 thinned to at most m, evenly spaced, first and last kept. */
function sampleIndices(B: number, m: number): number[] {
  if (B <= m) return Array.from({ length: B }, (_, i) => i);
  const idx = new Set<number>();
  for (let j = 0; j < m; j++) idx.add(Math.round((j * (B - 1)) / (m - 1)));
  return [...idx].sort((a, b) => a - b);
}

function expertColour(e: number): string {
  return `hsl(${Math.round((e * 137.508) % 360)} 70% 42%)`;
}

function biasChart(l: LayerBalance, maxPoints: number): string {
  const W = 272;
  const H = 158;
  const ml = 50;
  const mr = 10;
  const mt = 22;
  const mb = 30;
  const plotW = W - ml - mr;
  const plotH = H - mt - mb;
  const traj = l.bias_trajectory;
  const B = traj.length;
  let lo = 0;
  let hi = 0;
  for (const row of traj) {
    for (const v of row) {
      if (finite(v) === undefined) continue;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  const ticks = niceTicks(lo, hi, 4);
  const yLo = ticks[0]!;
  const yHi = ticks[ticks.length - 1]!;
  const y = (v: number) => mt + plotH - ((v - yLo) / (yHi - yLo)) * plotH;
  const x = (b: number) => (B <= 1 ? ml + plotW / 2 : ml + (b / (B - 1)) * plotW);
  const out: string[] = [];
  out.push(
    `<svg class="bias-chart" data-layer="${l.layer}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="selection bias per batch, layer ${l.layer}">`,
  );
  out.push(svgText(ml, 14, `layer ${l.layer}`, 'class="chart-title"'));
  out.push('<g class="grid">');
  for (const t of ticks) out.push(`<line x1="${ml}" x2="${ml + plotW}" y1="${c1(y(t))}" y2="${c1(y(t))}"/>`);
  out.push('</g><g class="axis">');
  for (const t of ticks) out.push(svgText(ml - 5, y(t) + 4, num(t, 3), 'text-anchor="end"'));
  out.push(`<line x1="${ml}" x2="${ml}" y1="${mt}" y2="${mt + plotH}"/>`);
  out.push(`<line x1="${ml}" x2="${ml + plotW}" y1="${c1(y(0))}" y2="${c1(y(0))}" class="zero"/>`);
  out.push(`<line x1="${ml}" x2="${ml + plotW}" y1="${mt + plotH}" y2="${mt + plotH}"/>`);
  const xTicks = B <= 1 ? [0] : [...new Set([0, Math.round((B - 1) / 2), B - 1])];
  for (const b of xTicks) out.push(svgText(x(b), mt + plotH + 13, String(b + 1), 'text-anchor="middle"'));
  out.push(svgText(ml + plotW / 2, H - 3, 'batch', 'text-anchor="middle" class="axis-title"'));
  out.push(svgText(12, mt + plotH / 2, 'δ', 'text-anchor="middle" class="axis-title"'));
  out.push('</g>');
  if (B === 0) {
    out.push(svgText(ml + plotW / 2, mt + plotH / 2, 'no batches', 'text-anchor="middle"'));
  } else {
    const idx = sampleIndices(B, maxPoints);
    out.push('<g class="lines">');
    for (let e = 0; e < l.experts; e++) {
      const pts = idx
        .map((b) => [b, finite(traj[b]?.[e])] as const)
        .filter((p): p is readonly [number, number] => p[1] !== undefined)
        .map(([b, v]) => `${Math.round(x(b))},${Math.round(y(v))}`);
      if (pts.length === 0) continue;
      const title = `<title>layer ${l.layer} expert ${e}: final δ ${num(l.bias[e])}</title>`;
      if (pts.length === 1) {
        const [cx, cy] = pts[0]!.split(',');
        out.push(`<circle cx="${cx}" cy="${cy}" r="2" fill="${expertColour(e)}">${title}</circle>`);
      } else {
        out.push(`<polyline points="${pts.join(' ')}" stroke="${expertColour(e)}">${title}</polyline>`);
      }
    }
    out.push('</g>');
  }
  out.push('</svg>');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------- page

const CSS = `
*{box-sizing:border-box}
body{margin:0;background:#eef0f3;color:#1f2328;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px 30px 48px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:0 0 6px;overflow-wrap:anywhere}
h2{font-size:17px;margin:34px 0 10px;padding-bottom:4px;border-bottom:1px solid #e3e6ea}
h3{font-size:14px;margin:18px 0 6px}
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;background:#f0f2f4;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere}
p{margin:6px 0}
.note{color:#57606a;font-size:12.5px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px;margin:12px 0 0}
dl.meta dt{color:#57606a}
dl.meta dd{margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:12px 0 18px}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:10px 14px}
.card .label{color:#57606a;font-size:11.5px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .detail{color:#57606a;font-size:12px}
.good{color:#1a7f37}.bad{color:#b42318}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #eceff2;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #d0d7de;font-weight:600;vertical-align:bottom}
td.ids{text-align:left;white-space:normal;max-width:320px}
svg{display:block;max-width:100%;height:auto;margin:6px 0}
svg text{font-size:11px;fill:#444}
svg .chart-title{font-size:12.5px;font-weight:600;fill:#1f2328}
svg .axis-title{fill:#57606a}
.axis line{stroke:#8b949e;stroke-width:1}
.axis line.zero{stroke:#57606a}
.grid line{stroke:#eceff2;stroke-width:1}
.legend text{font-size:12px}
.lines polyline{fill:none;stroke-width:1;stroke-opacity:.75}
.chart-row{display:flex;flex-wrap:wrap;gap:0 40px}
.bias-grid{display:flex;flex-wrap:wrap;gap:8px 12px}
.bias-grid svg{border:1px solid #eceff2;border-radius:4px;margin:0}
ul.under{columns:4 210px;column-gap:24px;padding-left:20px;margin:6px 0}
ul.defs{background:#f6f8fa;padding:10px 14px 10px 32px;border-radius:6px;margin:0;font-size:13px}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
`;

function card(label: string, value: string, detail: string, cls = ''): string {
  return `<div class="card"><div class="label">${esc(label)}</div><div class="value${cls ? ` ${cls}` : ''}">${esc(value)}</div><div class="detail">${esc(detail)}</div></div>`;
}

function summaryRow(name: string, s: BalanceSummary): string {
  return `<tr><td>${esc(name)}</td><td>${num(s.maxvio)}</td><td>${num(s.sigma)}</td><td>${int(s.min_tokens)}</td></tr>`;
}

export function renderBalanceHtml(report: BalanceReport): string {
  const r = report;
  const s = r.summary;
  const layers = r.layers;
  const flagged = underCalibrated(layers);
  const totalExperts = layers.reduce((a, l) => a + l.experts, 0);
  const q = ratio(s.used_second_half.maxvio, s.natural_second_half.maxvio);
  const K = scaleRange(layers);
  const body: string[] = [];

  // header
  body.push(`<h1>Expert balance report</h1>`);
  body.push(`<p><code>${esc(r.model)}</code> · ${esc(r.model_type)} · ${layers.length} MoE layer${layers.length === 1 ? '' : 's'}</p>`);
  body.push('<dl class="meta">');
  const meta: [string, string][] = [
    ['Model', `<code>${esc(r.model)}</code>`],
    ['Model type', esc(r.model_type)],
    ['Data', r.data.length ? r.data.map((d) => `<code>${esc(d)}</code>`).join(', ') : 'none'],
    ['Tokens', `${int(r.samples)} samples × ${int(r.seq_len)} seq_len = ${int(r.tokens)} tokens`],
    ['Seed', int(r.seed)],
    [
      'Routing bias',
      r.routing_bias === 'loss-free'
        ? `loss-free, rate ${num(r.bias_rate)}, ${esc(r.bias_update)} update`
        : 'none (natural routing)',
    ],
    ['Batches', int(r.batches)],
    ['Under-calibrated', `fewer than ${int(r.min_tokens_threshold)} tokens under the routing used`],
  ];
  for (const [k, v] of meta) body.push(`<dt>${esc(k)}</dt><dd>${v}</dd>`);
  body.push('</dl>');

  // summary
  body.push('<section id="summary"><h2>Summary</h2>');
  body.push('<div class="cards">');
  body.push(card('MaxVio, used', num(s.used.maxvio), `natural ${num(s.natural.maxvio)}`));
  body.push(card('σ of share, used', num(s.used.sigma), `natural ${num(s.natural.sigma)} (mean over layers)`));
  body.push(card('Min tokens, used', int(s.used.min_tokens), `natural ${int(s.natural.min_tokens)}`));
  body.push(
    card(
      'MaxVio ratio, 2nd half',
      q === undefined ? 'n/a' : num(q),
      'used / natural, second half of the batches',
      q === undefined ? '' : q < 1 ? 'good' : q > 1 ? 'bad' : '',
    ),
  );
  body.push(
    card(
      'Under-calibrated',
      `${flagged.length} / ${totalExperts}`,
      `experts with < ${int(r.min_tokens_threshold)} tokens`,
      flagged.length ? 'bad' : 'good',
    ),
  );
  body.push('</div>');
  body.push('<div class="table-wrap"><table id="summary-table"><thead><tr><th>Routing</th><th>MaxVio</th><th>σ (mean over layers)</th><th>Min tokens</th></tr></thead><tbody>');
  body.push(summaryRow('natural', s.natural));
  body.push(summaryRow('used', s.used));
  body.push(summaryRow('used, second half', s.used_second_half));
  body.push(summaryRow('natural, second half', s.natural_second_half));
  body.push('</tbody></table></div>');
  body.push(
    `<p>MaxVio ratio, second half (used / natural): <strong id="maxvio-ratio">${q === undefined ? 'n/a' : num(q)}</strong></p>`,
  );
  body.push('</section>');

  // per-layer charts
  const layerIds = layers.map((l) => l.layer);
  body.push('<section id="per-layer"><h2>Per-layer balance: natural vs used routing</h2>');
  if (layers.length === 0) body.push('<p class="note">The report has no MoE layers.</p>');
  else {
    body.push('<div class="chart-row">');
    body.push(
      groupedBarChart('chart-maxvio', 'MaxVio per layer', layerIds, [
        { name: 'natural', colour: NATURAL_COLOUR, values: layers.map((l) => finite(l.natural.maxvio)) },
        { name: 'used', colour: USED_COLOUR, values: layers.map((l) => finite(l.used.maxvio)) },
      ]),
    );
    body.push(
      groupedBarChart('chart-sigma', 'σ of token share per layer', layerIds, [
        { name: 'natural', colour: NATURAL_COLOUR, values: layers.map((l) => finite(l.natural.sigma)) },
        { name: 'used', colour: USED_COLOUR, values: layers.map((l) => finite(l.used.sigma)) },
      ]),
    );
    body.push('</div>');
  }
  body.push('</section>');

  // heatmaps
  body.push('<section id="share-used"><h2>Token share per expert: routing used</h2>');
  body.push('<p class="note">One cell per (layer, expert); hover a cell for its tokens, share and mean affinity. White = uniform share.</p>');
  body.push(colourLegend(K));
  body.push(heatmap(r, 'used', K));
  body.push('</section>');
  body.push('<section id="share-natural"><h2>Token share per expert: natural routing</h2>');
  body.push('<p class="note">Same colour scale, for the routing the model makes without the selection bias.</p>');
  body.push(heatmap(r, 'natural', K));
  body.push('</section>');

  // bias trajectories
  body.push('<section id="bias"><h2>Selection bias δ per batch</h2>');
  if (r.routing_bias === 'none') body.push('<p class="note">No loss-free routing bias in this run: δ stays 0.</p>');
  else body.push('<p class="note">One line per expert; hover a line for the expert and its final δ.</p>');
  const lines = layers.reduce((a, l) => a + l.experts, 0);
  const maxPoints = Math.max(8, Math.floor(MAX_TRAJECTORY_POINTS / Math.max(lines, 1)));
  const maxB = Math.max(0, ...layers.map((l) => l.bias_trajectory.length));
  if (maxB > maxPoints) body.push(`<p class="note">${maxPoints} of ${maxB} batches drawn per line, evenly spaced.</p>`);
  body.push('<div class="bias-grid">');
  for (const l of layers) body.push(biasChart(l, maxPoints));
  body.push('</div></section>');

  // under-calibrated experts
  body.push('<section id="under-calibrated"><h2>Under-calibrated experts</h2>');
  if (flagged.length === 0) {
    body.push(`<p>None: every expert received at least ${int(r.min_tokens_threshold)} tokens under the routing used.</p>`);
  } else {
    body.push(
      `<p>${flagged.length} of ${totalExperts} experts received fewer than ${int(r.min_tokens_threshold)} tokens under the routing used:</p>`,
    );
    body.push('<ul class="under">');
    for (const f of flagged) body.push(`<li>layer ${f.layer} expert ${f.expert} (${f.tokens} tokens)</li>`);
    body.push('</ul>');
  }
  body.push('</section>');

  // per-layer table
  body.push('<section id="layer-table"><h2>Per-layer numbers</h2><div class="table-wrap"><table><thead><tr>');
  for (const h of LAYER_TABLE_HEADER) body.push(`<th>${esc(h)}</th>`);
  body.push('</tr></thead><tbody>');
  for (const l of layers) {
    const cells = layerTableRow(l);
    const ids = cells.pop()!;
    body.push(`<tr>${cells.map((c) => `<td>${esc(c)}</td>`).join('')}<td class="ids">${esc(ids)}</td></tr>`);
  }
  body.push('</tbody></table></div></section>');

  // definitions
  body.push(
    `<section id="definitions"><h2>Definitions</h2><ul class="defs">${definitionItems(r.definitions)
      .map((d) => `<li>${esc(d)}</li>`)
      .join('')}</ul></section>`,
  );

  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>Expert balance: ${esc(r.model)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body><main>',
    ...body,
    '</main></body>',
    '</html>',
    '',
  ].join('\n');
}
