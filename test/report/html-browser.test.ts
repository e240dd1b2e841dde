/**
 * balance-report.html in a real browser: headless Chromium driven over the DevTools protocol
 * (--remote-debugging-pipe, see ./chromium.ts). Checks that the page loads with no console errors, no uncaught
 * exceptions, no error-level browser log entries and no network requests at all; that the DOM holds exactly one
 * rect.cell per (layer, expert); and that nothing is wider than the page.
 *
 * Skipped when no Chromium binary is found (Debian/Ubuntu: apt-get install -y chromium; or set CHROMIUM_PATH).
 * REPORT_SCREENSHOT=/path/x.png saves a full-page screenshot of the realistic report.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { escapeHtml, renderBalanceHtml } from '../../src/report/html.js';
import type { BalanceReport } from '../../src/report/types.js';
import { Chromium, findChromium } from './chromium.js';
import { NASTY_MODEL, smallReport, syntheticReport } from './synthetic.js';

const bin = findChromium();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-html-'));
let browser: Chromium | undefined;

beforeAll(async () => {
  if (bin) browser = await Chromium.launch(bin);
}, 15_000);
afterAll(async () => {
  await browser?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const PROBES = [
  `document.querySelectorAll('rect.cell').length`,
  `new Set([...document.querySelectorAll('rect.cell')].map((r) => r.dataset.layer + ',' + r.dataset.expert)).size`,
  `document.querySelectorAll('rect.cell-natural').length`,
  `document.querySelectorAll('svg.bias-chart').length`,
  `document.querySelectorAll('script, link, img, iframe').length`,
  `document.documentElement.scrollWidth`,
  `(() => { const m = document.querySelector('main').getBoundingClientRect().right;
     return Math.max(...[...document.querySelectorAll('main svg')].map((s) => s.getBoundingClientRect().right)) - m; })()`,
  `document.title`,
  `document.querySelectorAll('#under-calibrated li').length`,
];

async function check(name: string, report: BalanceReport, screenshot?: string): Promise<void> {
  const file = path.join(tmp, `${name}.html`);
  fs.writeFileSync(file, renderBalanceHtml(report));
  const page = await browser!.open(file, { width: 1280, height: 2000, expressions: PROBES, screenshot });
  const [cells, unique, natural, biasCharts, external, scrollWidth, overflow, title, flagged] = page.values;
  const pairs = report.layers.reduce((a, l) => a + l.experts, 0);
  expect(page.errors, name).toEqual([]);
  expect(page.requests, name).toEqual([]);
  expect(page.console, name).toEqual([]);
  expect(cells, name).toBe(pairs);
  expect(unique, name).toBe(pairs);
  expect(natural, name).toBe(pairs);
  expect(biasCharts, name).toBe(report.layers.length);
  expect(external, name).toBe(0);
  expect(scrollWidth as number, `${name}: horizontal scroll`).toBeLessThanOrEqual(1280);
  expect(overflow as number, `${name}: an SVG sticks out of the page`).toBeLessThanOrEqual(0);
  expect(title, name).toBe(`Expert balance: ${report.model}`);
  expect(flagged, name).toBe(report.layers.reduce((a, l) => a + l.under_calibrated.length, 0));
}

describe('balance-report.html in headless Chromium', () => {
  it.skipIf(!bin)('loads cleanly: no console errors, no requests, one .cell per (layer, expert), fits 1280 px', async () => {
    const t0 = Date.now();
    // hostile model path (<script>&"), 3 × 8 with zero-token experts
    await check('small', smallReport());
    // realistic: 24 layers × 64 experts, top-6, loss-free bias over 32 batches
    await check(
      'realistic',
      syntheticReport({
        layers: 24,
        experts: 64,
        topK: 6,
        batches: 32,
        samples: 128,
        seqLen: 512,
        seed: 5,
        zero: { 3: [5, 9], 10: [40] },
        few: { 7: [1, 2, 3, 4] },
        model: '/models/Qwen1.5-MoE-A2.7B',
      }),
      process.env['REPORT_SCREENSHOT'],
    );
    // the extremes: 64 layers × 256 experts, and 64 layers × 8 experts
    await check('huge', syntheticReport({ layers: 64, experts: 256, topK: 8, batches: 64, seed: 9, zero: { 3: [5, 9] } }));
    await check('tall', syntheticReport({ layers: 64, experts: 8, topK: 2, batches: 16, seed: 4 }));
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 20_000);

  it.skipIf(!bin)('the harness itself catches console errors, uncaught exceptions and network references', async () => {
    const html = renderBalanceHtml(smallReport());
    expect(html).toContain(escapeHtml(NASTY_MODEL));
    const file = path.join(tmp, 'injected.html');
    fs.writeFileSync(
      file,
      html.replace(
        '</main>',
        `<script>console.error('deliberate')</script><img src="http://example.invalid/pixel.png" alt=""><script>throw new Error('boom')</script></main>`,
      ),
    );
    const page = await browser!.open(file, { expressions: [`document.querySelectorAll('rect.cell').length`] });
    expect(page.errors).toContain('console.error: deliberate');
    expect(page.errors.some((e) => e.startsWith('uncaught:') && e.includes('boom'))).toBe(true);
    expect(page.requests).toContain('http://example.invalid/pixel.png');
    expect(page.values[0]).toBe(24);
  }, 20_000);
});
