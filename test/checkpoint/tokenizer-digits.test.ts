/**
 * tokenizer.json's Digits pre-tokenizer runs as in transformers: every numeric character (Unicode N*) is isolated,
 * not only 0–9 as @huggingface/tokenizers' Digits does. Expected ids: the Rust tokenizers (Python `tokenizers`
 * 0.23.2, `Tokenizer.from_file(f).encode(text, add_special_tokens=False).ids`) on the same tokenizer.json — the
 * DeepSeek LLM/MoE/V2 layout of test/formats/tokenizer-styles.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer, withTransformersDigits } from '../../src/checkpoint/tokenizer.js';
import { styles } from '../formats/tokenizer-styles.js';

const RUST = new Map<string, number[]>([
  ['x ½ ² ٣ ① 12½ ²³ y', [120, 32, 194, 189, 32, 194, 178, 32, 217, 163, 32, 226, 145, 160, 32, 49, 50, 194, 189, 32, 194, 178, 194, 179, 326]],
  [
    'Numbers: 1 12 123 1234 12345 3.14159 1,000,000 2024-12-02 0x1F 1e-9 ½ ² ٣ ४\n',
    [
      78, 456, 1247, 58, 32, 49, 32, 49, 50, 32, 49, 50, 51, 32, 49, 50, 51, 52, 32, 49, 50, 51, 52, 53, 32, 51, 46, 49, 52, 49, 53, 57, 32, 49, 44, 48, 48,
      48, 44, 48, 48, 48, 32, 50, 48, 50, 52, 45, 49, 50, 45, 48, 50, 32, 48, 120, 49, 70, 32, 49, 101, 45, 57, 32, 194, 189, 32, 194, 178, 32, 217, 163,
      32, 224, 165, 170, 10,
    ],
  ],
]);

describe('Digits pre-tokenizer as transformers runs it', () => {
  it('isolates every numeric character (½ ² ٣ ① ४), as the Rust tokenizers do', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-digits-'));
    try {
      const style = styles().find((s) => s.pre === 'deepseek-llm')!;
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(style.tokenizer));
      const tok = loadTokenizer(dir);
      for (const [text, ids] of RUST) expect(Array.from(tok.encode(text)), text).toEqual(ids);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rewrites Digits inside a Sequence and leaves other pre-tokenizers alone', () => {
    const bl = { type: 'ByteLevel', add_prefix_space: false, use_regex: false };
    expect(withTransformersDigits({ type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, bl] })).toEqual({
      type: 'Sequence',
      pretokenizers: [{ type: 'Split', pattern: { Regex: '\\p{N}' }, behavior: 'Isolated', invert: false }, bl],
    });
    expect(withTransformersDigits({ type: 'Digits', individual_digits: false })).toEqual({ type: 'Split', pattern: { Regex: '\\p{N}+' }, behavior: 'Isolated', invert: false });
    expect(withTransformersDigits(bl)).toBe(bl);
    expect(withTransformersDigits(null)).toBe(null);
  });
});
