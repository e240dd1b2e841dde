/**
 * Text data for evaluation and calibration: raw text files are read whole; `.jsonl` files contribute each line's
 * `text` field, joined with "\n\n" (the GPTQ convention for C4-style data).
 */
import fs from 'node:fs';
import { fail } from '../errors.js';

export function readTextData(file: string): string {
  if (!fs.existsSync(file)) throw fail('BAD_DATA', `data file ${file} does not exist`);
  if (!fs.statSync(file).isFile()) throw fail('BAD_DATA', `data file ${file} is not a file`);
  const bytes = fs.readFileSync(file);
  if (bytes.includes(0)) throw fail('BAD_DATA', `data file ${file} is binary (it contains NUL bytes); give a text or .jsonl file`);
  let raw: string;
  try {
    raw = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw fail('BAD_DATA', `data file ${file} is not UTF-8 text; give a UTF-8 text or .jsonl file`);
  }
  if (raw.trim().length === 0) throw fail('BAD_DATA', `data file ${file} is empty`);
  if (!file.endsWith('.jsonl')) return raw;
  const texts: string[] = [];
  raw.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw fail('BAD_DATA', `${file}:${i + 1}: not valid JSON`);
    }
    const text = (obj as { text?: unknown })?.text;
    if (typeof text !== 'string') throw fail('BAD_DATA', `${file}:${i + 1}: no string "text" field`);
    texts.push(text);
  });
  if (texts.length === 0) throw fail('BAD_DATA', `data file ${file} has no text`);
  return texts.join('\n\n');
}

/** Non-overlapping windows of `seqLen` tokens from the start, tail dropped, at most `maxWindows`. */
export function consecutiveWindows(ids: Int32Array, seqLen: number, maxWindows?: number, seqLenOption = '--seq-len'): Int32Array[] {
  const n = Math.floor(ids.length / seqLen);
  if (n === 0) throw fail('BAD_DATA', `the data has ${ids.length} tokens, fewer than one window of ${seqLenOption} ${seqLen}`);
  const count = maxWindows === undefined ? n : Math.min(n, maxWindows);
  return Array.from({ length: count }, (_, w) => ids.subarray(w * seqLen, (w + 1) * seqLen));
}
