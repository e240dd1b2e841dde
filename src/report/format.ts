/**
 * Number and text formatting shared by the Markdown and HTML renderings of a balance report. Everything here is
 * locale-independent, so the same report always renders to the same string.
 */

/** A finite number, or undefined for anything else (NaN/Infinity turn into null in JSON). */
import type { LayerBalance } from './types.js';
export function finite(x: unknown): number | undefined {
  return typeof x === 'number' && Number.isFinite(x) ? x : undefined;
}

/** Digits grouped by thousands with commas: 262144 → "262,144". */
export function groupDigits(n: number): string {
  const s = String(Math.abs(Math.round(n)));
  const grouped = s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return n < 0 ? `-${grouped}` : grouped;
}

/**
 * A metric with 4 significant digits at most: 0.123456 → "0.1235", 12.3456 → "12.35", 0 → "0",
 * 1234.5 → "1,235", 3e-7 → "3e-7". Non-finite values (null in JSON) print as "n/a".
 */
export function num(x: unknown, digits = 4): string {
  const v = finite(x);
  if (v === undefined) return 'n/a';
  if (v === 0) return '0';
  if (Math.abs(v) >= 1000) return groupDigits(v);
  const a = Math.abs(v);
  if (a < 1e-4) {
    const [m, e] = v.toExponential(digits - 1).split('e');
    return `${String(Number(m))}e${Number(e)}`;
  }
  return String(Number(v.toPrecision(digits)));
}

/** An integer count with thousands separators; "n/a" when not a finite number. */
export function int(x: unknown): string {
  const v = finite(x);
  return v === undefined ? 'n/a' : groupDigits(v);
}

/** A fraction as a percentage with 3 significant digits: 0.012345 → "1.23%". */
export function pct(x: unknown): string {
  const v = finite(x);
  if (v === undefined) return 'n/a';
  return `${num(v * 100, 3)}%`;
}

/** used / natural, or undefined when the quotient is not meaningful (natural 0 or missing). */
export function ratio(used: unknown, natural: unknown): number | undefined {
  const u = finite(used);
  const n = finite(natural);
  if (u === undefined || n === undefined || n === 0) return undefined;
  return u / n;
}

/** Sorted ids as compact runs: [0,1,2,3,7,9,10] → "0–3, 7, 9, 10" (runs of 3 or more become ranges). */
export function idRanges(ids: readonly number[]): string {
  const s = [...new Set(ids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    if (j - i >= 2) parts.push(`${s[i]}–${s[j]}`);
    else for (let k = i; k <= j; k++) parts.push(String(s[k]));
    i = j + 1;
  }
  return parts.join(', ');
}

/** Under-calibrated experts of the report as (layer, expert, tokens) triples, in layer then expert order. */
export function underCalibrated(
  layers: readonly { layer: number; under_calibrated: readonly number[]; used: { tokens: readonly number[] } }[],
): { layer: number; expert: number; tokens: number }[] {
  const out: { layer: number; expert: number; tokens: number }[] = [];
  for (const l of layers) {
    for (const e of [...new Set(l.under_calibrated)].sort((a, b) => a - b)) {
      out.push({ layer: l.layer, expert: e, tokens: l.used.tokens[e] ?? 0 });
    }
  }
  return out;
}

/**
 * The report's definitions text as a list of items: one per line, or, for a single-line text, one per
 * "; "-separated clause. Leading list markers are dropped.
 */
export function definitionItems(text: string): string[] {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim().replace(/^[-*•]\s+/, ''))
    .filter((l) => l !== '');
  if (lines.length !== 1) return lines;
  return lines[0]!
    .split(/;\s+/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** Header of the per-layer table (Markdown and HTML render the same columns). */
export const LAYER_TABLE_HEADER = [
  'Layer',
  'Experts',
  'Top-k',
  'MaxVio nat',
  'MaxVio used',
  'σ nat',
  'σ used',
  'Entropy nat',
  'Entropy used',
  'Min tok nat',
  'Min tok used',
  'Under-calibrated',
];

/** Cells of one layer's row; the last cell lists under-calibrated expert ids ("—" for none). */
export function layerTableRow(l: LayerBalance): string[] {
  return [
    String(l.layer),
    String(l.experts),
    String(l.top_k),
    num(l.natural.maxvio),
    num(l.used.maxvio),
    num(l.natural.sigma),
    num(l.used.sigma),
    num(l.natural.entropy),
    num(l.used.entropy),
    int(l.natural.min_tokens),
    int(l.used.min_tokens),
    l.under_calibrated.length ? idRanges(l.under_calibrated) : '—',
  ];
}
