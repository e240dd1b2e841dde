import { describe, expect, it } from 'vitest';
import { escapeHtml, renderBalanceHtml } from '../../src/report/html.js';
import { balancedReport, NASTY_DATA, NASTY_MODEL, smallReport, syntheticReport, wideReport } from './synthetic.js';

function count(s: string, needle: RegExp): number {
  return (s.match(needle) ?? []).length;
}

/** Text content of every <title> inside the heatmap with the given cell class, keyed "layer,expert". */
function cells(html: string, cls: string): Map<string, string> {
  const re = new RegExp(`<rect class="${cls}" data-layer="(\\d+)" data-expert="(\\d+)"[^>]*><title>([^<]*)</title></rect>`, 'g');
  const out = new Map<string, string>();
  for (const m of html.matchAll(re)) {
    const key = `${m[1]},${m[2]}`;
    expect(out.has(key), `duplicate cell ${key}`).toBe(false);
    out.set(key, m[3]!);
  }
  return out;
}

describe('renderBalanceHtml', () => {
  const report = smallReport();
  const html = renderBalanceHtml(report);

  it('escapes model and data paths everywhere', () => {
    expect(escapeHtml(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    expect(html).not.toContain(NASTY_MODEL);
    expect(html).not.toContain(NASTY_DATA);
    expect(html).not.toContain('<script');
    expect(html).toContain(escapeHtml(NASTY_MODEL));
    expect(html).toContain(escapeHtml(NASTY_DATA));
    expect(html).toContain(`<title>Expert balance: ${escapeHtml(NASTY_MODEL)}</title>`);
  });

  it('is self-contained: no scripts, no external references', () => {
    for (const h of [html, renderBalanceHtml(wideReport())]) {
      expect(h.startsWith('<!DOCTYPE html>')).toBe(true);
      expect(h).not.toMatch(/https?:|\/\/[a-z]/i);
      expect(h).not.toMatch(/<script|<link|<img|<iframe|<object|<embed|@import|url\(|\bsrc=|\bhref=/i);
    }
  });

  it('has exactly one used-routing cell per (layer, expert), with tokens, share and affinity tooltips', () => {
    for (const r of [report, wideReport()]) {
      const h = renderBalanceHtml(r);
      const used = cells(h, 'cell');
      const natural = cells(h, 'cell-natural');
      const n = r.layers.reduce((a, l) => a + l.experts, 0);
      expect(count(h, /class="cell"/g)).toBe(n);
      expect(used.size).toBe(n);
      expect(natural.size).toBe(n);
      for (const l of r.layers) {
        for (let e = 0; e < l.experts; e++) {
          const tip = used.get(`${l.layer},${e}`)!;
          expect(tip).toContain(`layer ${l.layer} expert ${e}`);
          expect(tip).toMatch(new RegExp(`tokens ${l.used.tokens[e]!.toLocaleString('en-US')}\\n`));
          expect(tip).toMatch(/share [\d.]+%/);
          expect(tip).toMatch(/mean affinity [\d.]+/);
        }
      }
    }
  });

  it('draws zero-token experts in the "0 tokens" colour', () => {
    const m = html.match(/<rect class="cell" data-layer="1" data-expert="3"[^>]*fill="(#[0-9a-f]{6})"/);
    expect(m?.[1]).toBe('#111111');
    expect(html).toContain('0 tokens</text>');
  });

  it('has the summary, both bar charts, one bias chart per layer and the under-calibrated list', () => {
    expect(html).toContain('id="summary-table"');
    expect(html).toContain('id="chart-maxvio"');
    expect(html).toContain('id="chart-sigma"');
    expect(count(html, /<svg class="bias-chart" data-layer="\d+"/g)).toBe(3);
    const q = report.summary.used_second_half.maxvio / report.summary.natural_second_half.maxvio;
    expect(html).toContain(`<strong id="maxvio-ratio">${Number(q.toPrecision(4))}</strong>`);
    expect(html).toContain('<li>layer 1 expert 3 (0 tokens)</li>');
    expect(html).toContain('<li>layer 1 expert 5 (0 tokens)</li>');
    expect(html).toContain('<li>layer 2 expert 0 (3 tokens)</li>');
    expect(renderBalanceHtml(balancedReport())).toContain('None: every expert received at least 1 tokens');
  });

  it('keeps SVG widths within the 1200 px page for 8 to 256 experts and 4 to 64 layers', () => {
    for (const [layers, experts] of [
      [4, 8],
      [64, 8],
      [4, 256],
      [64, 256],
    ] as const) {
      const h = renderBalanceHtml(syntheticReport({ layers, experts, topK: 2, batches: 4, seed: layers + experts }));
      const widths = [...h.matchAll(/<svg [^>]*width="(\d+(?:\.\d+)?)"/g)].map((m) => Number(m[1]));
      expect(Math.max(...widths), `${layers}×${experts}`).toBeLessThanOrEqual(1140);
      expect(count(h, /class="cell"/g)).toBe(layers * experts);
    }
  });

  it('thins long bias trajectories to keep the file small', () => {
    const h = renderBalanceHtml(syntheticReport({ layers: 64, experts: 256, topK: 8, batches: 200, seed: 4 }));
    expect(h.length).toBeLessThan(12_000_000);
    expect(h).toMatch(/\d+ of 200 batches drawn per line/);
  });

  it('is deterministic', () => {
    expect(renderBalanceHtml(smallReport())).toBe(html);
    expect(renderBalanceHtml(JSON.parse(JSON.stringify(report)))).toBe(html);
  });
});
