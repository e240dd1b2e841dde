import { describe, expect, it } from 'vitest';
import { idRanges, num, int, pct, ratio, underCalibrated } from '../../src/report/format.js';
import { renderBalanceMarkdown } from '../../src/report/markdown.js';
import { balancedReport, NASTY_DATA, NASTY_MODEL, smallReport, wideReport } from './synthetic.js';

describe('number formatting', () => {
  it('keeps 4 significant digits, groups large numbers, prints n/a for non-finite', () => {
    expect(num(0.123456)).toBe('0.1235');
    expect(num(12.3456)).toBe('12.35');
    expect(num(3)).toBe('3');
    expect(num(0)).toBe('0');
    expect(num(1234.5)).toBe('1,235');
    expect(num(0.00012346)).toBe('0.0001235');
    expect(num(3e-7)).toBe('3e-7');
    expect(num(-0.5)).toBe('-0.5');
    expect(num(null)).toBe('n/a');
    expect(num(Number.NaN)).toBe('n/a');
    expect(int(262144)).toBe('262,144');
    expect(pct(0.012345)).toBe('1.23%');
    expect(ratio(1, 0)).toBeUndefined();
    expect(ratio(1, 4)).toBe(0.25);
  });

  it('compresses expert ids into ranges', () => {
    expect(idRanges([9, 0, 1, 2, 3, 7, 10])).toBe('0–3, 7, 9, 10');
    expect(idRanges([])).toBe('');
    expect(idRanges([5])).toBe('5');
  });
});

describe('renderBalanceMarkdown', () => {
  const report = smallReport();
  const md = renderBalanceMarkdown(report);

  it('has the header: model, type, data, samples × seq_len = tokens, seed, bias, batches', () => {
    expect(md).toContain(`\`${NASTY_MODEL}\``);
    expect(md).toContain('(`mixtral`)');
    expect(md).toContain(`\`${NASTY_DATA}\``);
    expect(md).toContain('16 samples × 128 seq_len = 2,048 tokens');
    expect(md).toContain('**Seed:** 7');
    expect(md).toContain('loss-free, rate 0.001, sign update, over 8 batches');
  });

  it('states the definitions as a list', () => {
    expect(md).toContain('## Definitions');
    expect(md).toMatch(/^- MaxVio = \(max load − mean load\)/m);
    expect(md).toMatch(/^- σ = sample standard deviation/m);
  });

  it('has the summary table and the second-half MaxVio ratio', () => {
    const s = report.summary;
    expect(md).toContain(`| natural | ${num(s.natural.maxvio)} | ${num(s.natural.sigma)} | ${int(s.natural.min_tokens)} |`);
    expect(md).toContain(`| used | ${num(s.used.maxvio)} | ${num(s.used.sigma)} | ${int(s.used.min_tokens)} |`);
    expect(md).toContain('| used, second half |');
    expect(md).toContain('| natural, second half |');
    const q = s.used_second_half.maxvio / s.natural_second_half.maxvio;
    expect(md).toContain(`MaxVio ratio, second half (used / natural): ${num(q)}`);
    expect(q).toBeLessThan(1);
    expect(md).toContain('more balanced than the natural routing');
  });

  it('has one per-layer row per layer, with the under-calibrated ids', () => {
    const rows = md.split('\n').filter((l) => /^\| \d+ \| 8 \| 2 \|/.test(l));
    expect(rows).toHaveLength(3);
    expect(rows[1]).toMatch(/\| 3, 5 \|$/);
    expect(rows[2]).toMatch(/\| 0 \|$/);
    expect(rows[0]).toMatch(/\| — \|$/);
    // header + separator have as many columns as the rows
    const cols = (l: string) => l.split(' | ').length;
    const header = md.split('\n').find((l) => l.startsWith('| Layer |'))!;
    expect(cols(header)).toBe(cols(rows[0]!));
  });

  it('names every under-calibrated expert with its token count', () => {
    expect(md).toContain('## Under-calibrated experts');
    expect(md).toContain('3 of 24 experts received fewer than 16 tokens');
    expect(md).toContain('- layer 1 expert 3 (0 tokens)');
    expect(md).toContain('- layer 1 expert 5 (0 tokens)');
    expect(md).toContain('- layer 2 expert 0 (3 tokens)');
    expect(underCalibrated(report.layers)).toHaveLength(3);
  });

  it('says so when no expert is under-calibrated, and reports no routing bias', () => {
    const b = renderBalanceMarkdown(balancedReport());
    expect(b).toContain('None: every expert received at least 1 tokens');
    expect(b).toContain('**Routing bias:** none');
    expect(b).not.toMatch(/^- layer \d+ expert/m);
  });

  it('handles 64 experts and layers numbered from 1', () => {
    const w = renderBalanceMarkdown(wideReport());
    expect(w).toContain('- layer 1 expert 17 (0 tokens)');
    expect(w.split('\n').filter((l) => /^\| [12] \| 64 \| 6 \|/.test(l))).toHaveLength(2);
  });

  it('keeps hostile text inert: code spans with backticks, no table-breaking pipes', () => {
    const r = smallReport();
    r.model = 'a`b|c';
    r.data = ['x|y.txt'];
    const m = renderBalanceMarkdown(r);
    expect(m).toContain('``a`b|c``');
    expect(m).toContain('`x|y.txt`');
  });

  it('prints n/a for metrics that were NaN (null in JSON)', () => {
    const r = smallReport();
    (r.summary.natural_second_half as { maxvio: number | null }).maxvio = null;
    const m = renderBalanceMarkdown(r);
    expect(m).toContain('| natural, second half | n/a |');
    expect(m).toContain('MaxVio ratio, second half (used / natural): n/a');
  });

  it('is deterministic', () => {
    expect(renderBalanceMarkdown(smallReport())).toBe(md);
    expect(renderBalanceMarkdown(JSON.parse(JSON.stringify(report)))).toBe(md);
  });
});
