/**
 * Structural check of a parsed balance-report.json, so that a damaged or foreign file fails with one clear BAD_DATA
 * message naming the file and the field instead of a TypeError deep inside a renderer.
 *
 * Metrics may be null: JSON.stringify writes NaN/Infinity (e.g. the mean affinity of an expert that got no tokens)
 * as null, and the renderers print those as "n/a".
 */
import { fail } from '../errors.js';
import { BALANCE_REPORT_FORMAT, type BalanceReport } from './types.js';

type Obj = Record<string, unknown>;

class Checker {
  constructor(private readonly source: string) {}

  bad(where: string, what: string): never {
    throw fail('BAD_DATA', `${this.source}: ${where} ${what}`);
  }

  obj(v: unknown, where: string): Obj {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.bad(where, 'must be an object');
    return v as Obj;
  }

  str(o: Obj, key: string, where: string): void {
    if (typeof o[key] !== 'string') this.bad(`${where}${key}`, 'must be a string');
  }

  num(o: Obj, key: string, where: string): void {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(`${where}${key}`, 'must be a finite number');
  }

  int(o: Obj, key: string, where: string, min: number): number {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.bad(`${where}${key}`, `must be an integer ≥ ${min}`);
    return v;
  }

  /** A metric: a number, or null for NaN/Infinity. */
  metric(o: Obj, key: string, where: string): void {
    const v = o[key];
    if (v !== null && typeof v !== 'number') this.bad(`${where}${key}`, 'must be a number or null');
  }

  oneOf(o: Obj, key: string, where: string, values: readonly string[]): void {
    if (!values.includes(o[key] as string)) this.bad(`${where}${key}`, `must be one of ${values.map((v) => `"${v}"`).join(', ')}`);
  }

  array(v: unknown, where: string, length?: number): unknown[] {
    if (!Array.isArray(v)) this.bad(where, 'must be an array');
    if (length !== undefined && v.length !== length) this.bad(where, `must have ${length} entries (one per expert), not ${v.length}`);
    return v;
  }

  metrics(v: unknown, where: string, length: number): void {
    const a = this.array(v, where, length);
    a.forEach((x, i) => {
      if (x !== null && typeof x !== 'number') this.bad(`${where}[${i}]`, 'must be a number or null');
    });
  }

  counts(v: unknown, where: string, length: number): void {
    const a = this.array(v, where, length);
    a.forEach((x, i) => {
      if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) this.bad(`${where}[${i}]`, 'must be a token count ≥ 0');
    });
  }

  summary(v: unknown, where: string): Obj {
    const o = this.obj(v, where);
    for (const k of ['maxvio', 'sigma', 'min_tokens']) this.metric(o, k, `${where}.`);
    return o;
  }

  stats(v: unknown, where: string, experts: number): void {
    const o = this.summary(v, where);
    this.metric(o, 'entropy', `${where}.`);
    this.counts(o['tokens'], `${where}.tokens`, experts);
    for (const k of ['share', 'affinity_mass', 'mean_affinity']) this.metrics(o[k], `${where}.${k}`, experts);
  }
}

/** The parsed JSON as a BalanceReport, or a BAD_DATA error naming `source` and the first offending field. */
export function validateBalanceReport(value: unknown, source: string): BalanceReport {
  const c = new Checker(source);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw fail('BAD_DATA', `${source} is not a moe-quant balance report (expected a JSON object)`);
  }
  const r = value as Obj;
  if (r['format'] === undefined) {
    throw fail('BAD_DATA', `${source} is not a moe-quant balance report (no "format" field; expected "${BALANCE_REPORT_FORMAT}")`);
  }
  if (r['format'] !== BALANCE_REPORT_FORMAT) {
    throw fail(
      'BAD_DATA',
      `${source} has format ${JSON.stringify(r['format'])}; this version of moe-quant reads "${BALANCE_REPORT_FORMAT}"`,
    );
  }
  for (const k of ['model', 'model_type', 'definitions']) c.str(r, k, '');
  c.array(r['data'], 'data').forEach((d, i) => {
    if (typeof d !== 'string') c.bad(`data[${i}]`, 'must be a string');
  });
  for (const k of ['samples', 'seq_len', 'tokens', 'seed', 'bias_rate', 'batches', 'min_tokens_threshold']) c.num(r, k, '');
  c.oneOf(r, 'routing_bias', '', ['none', 'loss-free']);
  c.oneOf(r, 'bias_update', '', ['quantile', 'sign', 'linear']);
  c.array(r['layers'], 'layers').forEach((lv, i) => {
    const w = `layers[${i}]`;
    const l = c.obj(lv, w);
    c.int(l, 'layer', `${w}.`, 0);
    const experts = c.int(l, 'experts', `${w}.`, 1);
    c.int(l, 'top_k', `${w}.`, 1);
    c.stats(l['natural'], `${w}.natural`, experts);
    c.stats(l['used'], `${w}.used`, experts);
    c.summary(l['natural_second_half'], `${w}.natural_second_half`);
    c.summary(l['used_second_half'], `${w}.used_second_half`);
    c.array(l['under_calibrated'], `${w}.under_calibrated`).forEach((e, j) => {
      if (typeof e !== 'number' || !Number.isInteger(e) || e < 0 || e >= experts) {
        c.bad(`${w}.under_calibrated[${j}]`, `must be an expert id in 0..${experts - 1}`);
      }
    });
    c.metrics(l['bias'], `${w}.bias`, experts);
    c.array(l['bias_trajectory'], `${w}.bias_trajectory`).forEach((row, b) => c.metrics(row, `${w}.bias_trajectory[${b}]`, experts));
  });
  const s = c.obj(r['summary'], 'summary');
  for (const k of ['natural', 'used', 'natural_second_half', 'used_second_half']) c.summary(s[k], `summary.${k}`);
  return value as BalanceReport;
}
