/**
 * llama.cpp's tokenization of moe-quant GGUF files equals moe-quant's own (@huggingface/tokenizers on the model's
 * tokenizer.json) for every tokenizer layout the writer supports: the trained fixtures' weights with the tokenizer.json
 * of each real model's layout swapped in (test/formats/tokenizer-styles.ts), written by convertToGguf, tokenized by
 * a real llama.cpp (tokenizer only) on 400 KB of WikiText-2 test text plus code, CJK, emoji and other Unicode text.
 * Needs `npm run llama:install`; `npm run test:llama` runs it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/checkpoint/tokenizer.js';
import { convertToGguf } from '../../src/formats/gguf/convert.js';
import { GgufFile, writeGguf, type GgufValue } from '../../src/formats/gguf/file.js';
import { DEEPSEEK_TEXT, MIXED, modelWithTokenizer, numericMerges, sampleText, styles } from '../formats/tokenizer-styles.js';
import { llamaMissing, llamaTokenize } from './llama.js';

const missing = llamaMissing();
if (missing) console.warn(`skipping the llama.cpp tokenizer suite: ${missing}`);
const suite = missing ? describe.skip : describe;

let tmp: string;

/** The first index where a and b differ, with a little context, for the failure message. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  if (i === a.length && i === b.length) return 'identical';
  return `lengths ${a.length} vs ${b.length}, first difference at ${i}: ${JSON.stringify(Array.from(a).slice(i, i + 8))} vs ${JSON.stringify(Array.from(b).slice(i, i + 8))}`;
}

suite('llama.cpp tokenizes moe-quant GGUF files as moe-quant does', () => {
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-llama-tok-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const text = sampleText(400_000);
  styles().forEach((style, k) => {
    it(`${style.name}: identical ids on ${Math.round(text.length / 1000)} K characters`, async () => {
      const model = modelWithTokenizer(style, path.join(tmp, `m${k}`));
      const file = await convertToGguf(model, fs.mkdtempSync(path.join(tmp, 'g-')), { type: 'q8_0' });
      const g = GgufFile.open(file);
      expect([g.get('tokenizer.ggml.model'), g.get('tokenizer.ggml.pre')]).toEqual([style.model, style.pre]);
      g.close();
      const ours = loadTokenizer(model).encode(text);
      const theirs = llamaTokenize(file, text);
      console.log(`${style.name}: ${ours.length} tokens (moe-quant) vs ${theirs.length} (llama.cpp): ${firstDifference(ours, theirs)}`);
      expect(firstDifference(theirs, ours)).toBe('identical');
      // the mixed text alone (no WikiText before it), and moe-quant's reading of the GGUF file agrees with llama.cpp too
      expect(firstDifference(llamaTokenize(file, MIXED), loadTokenizer(model).encode(MIXED))).toBe('identical');
      expect(firstDifference(loadTokenizer(file).encode(text), llamaTokenize(file, text))).toBe('identical');
    });
  });

  it('deepseek-llm: numbers, Greek Extended, CJK, Hangul and non-ASCII spaces and non-ASCII numerals identical; a digit merge would differ', async () => {
    const style = styles().find((s) => s.pre === 'deepseek-llm')!;
    const model = modelWithTokenizer(style, path.join(tmp, 'dsllm'));
    const file = await convertToGguf(model, fs.mkdtempSync(path.join(tmp, 'g-')), { type: 'q8_0' });
    const ours = loadTokenizer(model);
    const back = loadTokenizer(file);
    const theirs = llamaTokenize(file, DEEPSEEK_TEXT);
    console.log(`deepseek-llm on DEEPSEEK_TEXT: ${ours.encode(DEEPSEEK_TEXT).length} tokens (moe-quant) vs ${theirs.length} (llama.cpp)`);
    expect(firstDifference(theirs, ours.encode(DEEPSEEK_TEXT))).toBe('identical');
    expect(firstDifference(theirs, back.encode(DEEPSEEK_TEXT))).toBe('identical');
    // ½ ² ٣ ① are \p{N}: llama.cpp keeps a run of them whole and no merge joins two, tokenizer.json's Digits (as
    // transformers runs it, test/checkpoint/tokenizer-digits.test.ts) isolates each: the same ids
    const numeric = 'x ½ ² ٣ ① 12½ ²³ y';
    expect(firstDifference(llamaTokenize(file, numeric), ours.encode(numeric))).toBe('identical');
    expect(firstDifference(llamaTokenize(file, numeric), back.encode(numeric))).toBe('identical');
    // the fixtures' own merges ("0 0", "1 9", … which the writer refuses) in a deepseek-llm file: numbers tokenize differently
    const all = (JSON.parse(fs.readFileSync(path.join(style.fixture, '../tiny-qwen3-moe/tokenizer.json'), 'utf8')) as { model: { merges: string[] } }).model.merges;
    expect(numericMerges(all).size).toBeGreaterThan(0);
    const g = GgufFile.open(file);
    const meta = new Map(g.metadata);
    g.close();
    meta.set('tokenizer.ggml.merges', { type: 'arr', of: 'str', value: all });
    const digitFile = path.join(fs.mkdtempSync(path.join(tmp, 'v-')), 'vocab.gguf');
    writeGguf(digitFile, [...meta], []);
    const digitModel = modelWithTokenizer({ ...style, tokenizer: { ...style.tokenizer, model: { ...(style.tokenizer['model'] as object), merges: all } } }, path.join(tmp, 'dsllm-digits'));
    const years = 'In 1999 and 2000, 100 of 12345 were 0.001.';
    const digitIds = llamaTokenize(digitFile, years);
    console.log(`deepseek-llm with digit merges on "${years}": ${firstDifference(digitIds, loadTokenizer(digitModel).encode(years))}`);
    expect(firstDifference(digitIds, loadTokenizer(digitModel).encode(years))).not.toBe('identical');
  });

  it('the check is sensitive: the Qwen2 file labelled "gpt-2", or the SPM file with one score for all tokens (what convert_hf_to_gguf writes for a tokenizer.json-only Llama), tokenize differently', async () => {
    /** A vocabulary-only copy of `file` with some keys replaced. */
    const variant = (file: string, replace: Array<[string, GgufValue]>) => {
      const g = GgufFile.open(file);
      const meta = new Map(g.metadata);
      g.close();
      for (const [k, v] of replace) meta.set(k, v);
      const out = path.join(fs.mkdtempSync(path.join(tmp, 'v-')), 'vocab.gguf');
      writeGguf(out, [...meta], []);
      return out;
    };
    const sample = sampleText(100_000);
    for (const [pre, replace] of [
      ['qwen2', [['tokenizer.ggml.pre', { type: 'str', value: 'gpt-2' }]]],
      ['default', [['tokenizer.ggml.scores', { type: 'arr', of: 'f32', value: new Array(4096).fill(-1000) }]]],
    ] as Array<[string, Array<[string, GgufValue]>]>) {
      const style = styles().find((s) => s.pre === pre)!;
      const model = modelWithTokenizer(style, fs.mkdtempSync(path.join(tmp, 's-')));
      const file = await convertToGguf(model, fs.mkdtempSync(path.join(tmp, 'g-')), { type: 'q8_0' });
      const ours = loadTokenizer(model).encode(sample);
      expect(firstDifference(llamaTokenize(variant(file, []), sample), ours)).toBe('identical');
      const wrong = llamaTokenize(variant(file, replace), sample);
      console.log(`${style.name} with ${replace[0]![0]} replaced: ${firstDifference(wrong, ours)}`);
      expect(firstDifference(wrong, ours)).not.toBe('identical');
    }
  });

  it('llama.cpp does not apply an NFC normalizer (Qwen2, OLMoE): text in another normal form tokenizes differently', async () => {
    const style = styles().find((s) => s.pre === 'qwen2')!;
    const model = modelWithTokenizer(style, path.join(tmp, 'nfd'));
    const file = await convertToGguf(model, fs.mkdtempSync(path.join(tmp, 'g-')), { type: 'q8_0' });
    const nfd = 'cafe\u0301 nai\u0308ve'; // "café naïve" decomposed
    const ours = Array.from(loadTokenizer(model).encode(nfd));
    const theirs = Array.from(llamaTokenize(file, nfd));
    console.log(`NFD "café naïve": moe-quant ${JSON.stringify(ours)}, llama.cpp ${JSON.stringify(theirs)}`);
    expect(theirs).not.toEqual(ours);
    expect(Array.from(llamaTokenize(file, nfd.normalize('NFC')))).toEqual(ours);
  });
});
