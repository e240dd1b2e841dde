/**
 * The tokenizer written into GGUF files: which llama.cpp tokenizer each real model's tokenizer.json layout becomes
 * (pre-tokenizer name, model, scores, token types, special ids), that the tokenizer read back from the file
 * tokenizes text exactly as tokenizer.json does, and what is refused. llama.cpp's own tokenization of these files:
 * test/llama/tokenizer.llama.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTransformersDigits } from '../../src/checkpoint/tokenizer.js';
import { MoeQuantError } from '../../src/errors.js';
import { GgufFile, writeGguf } from '../../src/formats/gguf/file.js';
import { tokenizerJsonFromGguf, tokenizerMetadata } from '../../src/formats/gguf/tokenizer.js';
import { DEEPSEEK_LLM, DEEPSEEK_TEXT, LLAMA3, SPM_DIR, deepseekLlmPre, sampleText, styles, type Style } from './tokenizer-styles.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-gguf-tok-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function tokDir(tokenizer: object, tokenizerConfig?: object): string {
  const dir = path.join(tmp, `t${n++}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  if (tokenizerConfig) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
  return dir;
}
function metadata(s: Pick<Style, 'tokenizer' | 'tokenizerConfig'>, config: Record<string, unknown> = {}): Map<string, unknown> {
  return new Map(tokenizerMetadata(tokDir(s.tokenizer, s.tokenizerConfig), 4096, config).map(([k, v]) => [k, v.value]));
}
/** As loadTokenizer runs a tokenizer.json (Digits as transformers runs it). */
const encode = (json: object, text: string) =>
  new Tokenizer({ ...json, pre_tokenizer: withTransformersDigits((json as { pre_tokenizer?: unknown }).pre_tokenizer ?? null) }, {}).encode(text, { add_special_tokens: false }).ids;

describe('GGUF tokenizer metadata per tokenizer.json layout', () => {
  for (const s of styles()) {
    it(`${s.name} → tokenizer.ggml.model "${s.model}", pre "${s.pre}"; read back, it tokenizes text as tokenizer.json does`, () => {
      const meta = metadata(s, { eos_token_id: 4095 });
      expect(meta.get('tokenizer.ggml.model')).toBe(s.model);
      expect(meta.get('tokenizer.ggml.pre')).toBe(s.pre);
      const tokens = meta.get('tokenizer.ggml.tokens') as string[];
      const types = meta.get('tokenizer.ggml.token_type') as number[];
      expect(tokens).toHaveLength(4096);
      if (s.model === 'gpt2') {
        expect(meta.has('tokenizer.ggml.scores')).toBe(false);
        expect((meta.get('tokenizer.ggml.merges') as string[]).length).toBe((s.tokenizer['model'] as { merges: unknown[] }).merges.length);
        expect(types[4095]).toBe(3); // <|endoftext|>: control
        expect(new Set(types.slice(0, 4095))).toEqual(new Set([1]));
        expect(meta.get('tokenizer.ggml.eos_token_id')).toBe(4095);
        expect(meta.get('tokenizer.ggml.add_bos_token')).toBe(false);
      } else {
        expect(meta.has('tokenizer.ggml.merges')).toBe(false);
        expect(tokens.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
        expect(types.slice(0, 3)).toEqual([2, 3, 3]); // unknown, control, control
        expect(types.slice(3, 259)).toEqual(new Array(256).fill(6)); // <0x00>…<0xFF>: byte
        expect(tokens[3 + 0x41]).toBe('<0x41>');
        expect(types.slice(259, 3000).every((t) => t === 1)).toBe(true);
        expect(types.slice(3000).every((t) => t === 5)).toBe(true); // embedding rows beyond the vocabulary: unused
        expect([meta.get('tokenizer.ggml.bos_token_id'), meta.get('tokenizer.ggml.eos_token_id'), meta.get('tokenizer.ggml.unknown_token_id')]).toEqual([1, 2, 0]);
        expect(meta.get('tokenizer.ggml.add_bos_token')).toBe(true);
        expect(meta.get('tokenizer.ggml.add_space_prefix')).toBe(true);
        // scores: −(rank of the first merge making the piece); the earliest merge's piece scores highest
        const scores = meta.get('tokenizer.ggml.scores') as number[];
        const merges = (s.tokenizer['model'] as { merges: Array<[string, string]> }).merges;
        const first = tokens.indexOf(merges[0]!.join(''));
        expect(scores[first]).toBe(-0);
        expect(scores[tokens.indexOf(merges[merges.length - 1]!.join(''))]).toBeLessThan(-1000);
        expect(scores[0]).toBe(-0);
      }
      const file = path.join(tmp, `meta${n++}.gguf`);
      writeGguf(file, [['general.architecture', { type: 'str', value: 'llama' }], ...([...metadata(s)].map(([k]) => k).length ? tokenizerMetadata(tokDir(s.tokenizer, s.tokenizerConfig), 4096, {}) : [])], []);
      const g = GgufFile.open(file);
      const back = tokenizerJsonFromGguf(g);
      g.close();
      // deepseek-llm reads back as llama.cpp splits (numbers whole, \p{N}+): the same ids, as no merge joins two numerals
      const text = s.pre === 'deepseek-llm' ? `${sampleText(200_000)}\n${DEEPSEEK_TEXT}` : sampleText(200_000);
      expect(encode(back, text)).toEqual(encode(s.tokenizer, text));
    });
  }

  it('deepseek-llm: the Hub layout with escaped code points is the same style; the read-back keeps numbers whole as llama.cpp does', () => {
    const s = styles().find((x) => x.pre === 'deepseek-llm')!;
    const escaped = DEEPSEEK_LLM.map((p) => p.replace(/[^\x00-\x7f]/gu, (c) => `\\x{${c.codePointAt(0)!.toString(16)}}`).replace(/\r/g, '\\r').replace(/\n/g, '\\n'));
    expect(escaped[1]).toContain('\\x{1f7d}');
    expect(metadata({ tokenizer: { ...s.tokenizer, pre_tokenizer: deepseekLlmPre(escaped) } }).get('tokenizer.ggml.pre')).toBe('deepseek-llm');
    const utf16 = DEEPSEEK_LLM.map((p) => Array.from(p, (c) => (c.charCodeAt(0) < 0x80 ? c : Array.from({ length: c.length }, (_, k) => `\\u${c.charCodeAt(k).toString(16).padStart(4, '0')}`).join(''))).join(''));
    expect(metadata({ tokenizer: { ...s.tokenizer, pre_tokenizer: deepseekLlmPre(utf16) } }).get('tokenizer.ggml.pre')).toBe('deepseek-llm');
    const file = path.join(tmp, `ds${n++}.gguf`);
    writeGguf(file, [['general.architecture', { type: 'str', value: 'deepseek' }], ...tokenizerMetadata(tokDir(s.tokenizer), 4096, {})], []);
    const g = GgufFile.open(file);
    const back = tokenizerJsonFromGguf(g);
    g.close();
    // "½ ²": tokenizer.json's Digits isolates ½ and ², llama.cpp keeps each run whole; no merge joins numerals
    expect(encode(back, '1e-9 ½ ² ²³ x')).toEqual(encode(s.tokenizer, '1e-9 ½ ² ²³ x'));
    expect(encode(back, '1e-9 x 12 345')).toEqual(encode(s.tokenizer, '1e-9 x 12 345'));
  });

  it('special tokens: tokenizer_config.json token strings first, then config.json ids; add_bos_token from the post-processor', () => {
    const spm = styles().find((s) => s.model === 'llama')!;
    const meta = metadata({ tokenizer: spm.tokenizer }, { bos_token_id: 1, eos_token_id: 2, pad_token_id: 0 });
    expect(meta.get('tokenizer.ggml.padding_token_id')).toBe(0);
    expect(meta.get('tokenizer.ggml.add_bos_token')).toBe(true); // TemplateProcessing starts with <s>
    const off = metadata({ tokenizer: spm.tokenizer, tokenizerConfig: { add_bos_token: false, eos_token: { content: '</s>' } } });
    expect(off.get('tokenizer.ggml.add_bos_token')).toBe(false);
    expect(off.get('tokenizer.ggml.eos_token_id')).toBe(2);
  });
});

describe('GGUF refuses a tokenizer llama.cpp would split differently, naming the file and what it found', () => {
  const byte = () => styles()[0]!.tokenizer;
  const spm = () => JSON.parse(fs.readFileSync(path.join(SPM_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown> & { model: { merges: Array<[string, string]> } };
  const cases: Array<[string, () => object, RegExp]> = [
    ['a Split pattern llama.cpp names differently (Llama-3)', () => ({ ...byte(), pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: LLAMA3 }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, use_regex: false }] } }), /pre-tokenizer Sequence\[Split\("\(\?i:'s\|.*…", Isolated\), ByteLevel\(add_prefix_space false, use_regex false\)\]/],
    ['Qwen2\'s pattern with one character changed', () => ({ ...byte(), pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, use_regex: false }] } }), /pre-tokenizer Sequence\[Split/],
    ['deepseek-llm with a merge joining two digits (the fixtures\' vocabulary: their GPT-2 split kept numbers whole)', () => { const s = styles().find((x) => x.pre === 'deepseek-llm')!; return { ...s.tokenizer, model: byte()['model'] }; }, /merge \d+ "0 0" joins two numeric characters \("00"\): tokenizer.json's Digits\(individual_digits\) splits numbers into single characters first, llama.cpp's "deepseek-llm" pre-tokenizer keeps them whole \(\\p\{N\}\+\)/],
    ['deepseek-llm with a merge joining the end of "²" to "1"', () => { const s = styles().find((x) => x.pre === 'deepseek-llm')!; const t = s.tokenizer as { model: { merges: string[]; vocab: Record<string, number> } }; return { ...t, model: { ...t.model, merges: [...t.model.merges, '\u00c2\u00b2 1'] } }; }, /merge \d+ "Â² 1" joins two numeric characters \("²1"\)/],
    ['deepseek-llm with Digits not individual', () => { const p = deepseekLlmPre() as { pretokenizers: Array<Record<string, unknown>> }; p.pretokenizers[5] = { type: 'Digits', individual_digits: false }; return { ...styles().find((x) => x.pre === 'deepseek-llm')!.tokenizer, pre_tokenizer: p }; }, /pre-tokenizer Sequence\[Split\("\[\\r\\n\]", Isolated\), .*Digits\(individual_digits false\), ByteLevel/],
    ['deepseek-llm without Digits', () => { const p = deepseekLlmPre() as { pretokenizers: unknown[] }; p.pretokenizers.splice(5, 1); return { ...styles().find((x) => x.pre === 'deepseek-llm')!.tokenizer, pre_tokenizer: p }; }, /pre-tokenizer Sequence\[Split/],
    ['deepseek-llm with a Greek Extended range end written as its NFC form (U+1F7D as U+03CE)', () => ({ ...styles().find((x) => x.pre === 'deepseek-llm')!.tokenizer, pre_tokenizer: deepseekLlmPre(DEEPSEEK_LLM.map((p) => p.replace('\u1F7D', '\u03CE'))) }), /pre-tokenizer Sequence\[Split/],
    ['ByteLevel with add_prefix_space', () => ({ ...byte(), pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, use_regex: true } }), /pre-tokenizer ByteLevel\(add_prefix_space true, use_regex true\)/],
    ['Whitespace pre-tokenizer', () => ({ ...byte(), pre_tokenizer: { type: 'Whitespace' } }), /pre-tokenizer Whitespace\(\)/],
    ['a lowercasing normalizer', () => ({ ...byte(), normalizer: { type: 'Lowercase' } }), /normalizer Lowercase\(\)/],
    ['WordPiece', () => ({ ...byte(), model: { type: 'WordPiece', vocab: {} } }), /model type WordPiece/],
    ['Llama-3 (ignore_merges)', () => { const t = byte() as { model: Record<string, unknown> }; return { ...t, model: { ...t.model, ignore_merges: true } }; }, /ignore_merges/],
    ['SPM BPE with Metaspace split at spaces', () => ({ ...spm(), normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: true } }), /byte_fallback\) with normalizer none and pre-tokenizer Metaspace\(replacement "▁", prepend_scheme "first", split true\)/],
    ['SPM BPE missing one split of a piece', () => { const t = spm(); const i = t.model.merges.findIndex((m, k) => k > 0 && m.join('') === t.model.merges[k - 1]!.join('')); t.model.merges.splice(i, 1); return t; }, /merges are not an SPM export's \(".*" \+ ".*" makes token \d+ ".*" but is no merge\)/],
    ['SPM BPE whose merges for a piece are apart', () => { const t = spm(); const i = t.model.merges.findIndex((m, k) => k > 0 && m.join('') === t.model.merges[k - 1]!.join('')); const [m] = t.model.merges.splice(i, 1); t.model.merges.push(m!); return t; }, /the merges making ".*" are not consecutive \(rank \d+ and \d+\)/],
    ['SPM BPE with a Metaspace pre-tokenizer (adds "▁" only before text not starting with a space; llama.cpp always does)', () => ({ ...spm(), normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false } }), /pre-tokenizer Metaspace\(replacement "▁", prepend_scheme "first", split false\)/],
  ];
  for (const [name, tj, re] of cases) {
    it(name, () => {
      const dir = tokDir(tj());
      let err: unknown = null;
      try {
        tokenizerMetadata(dir, 4096, {});
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MoeQuantError);
      expect((err as MoeQuantError).code).toBe('UNSUPPORTED');
      const msg = (err as Error).message;
      expect(msg.startsWith(`--format gguf: ${path.join(dir, 'tokenizer.json')}: `)).toBe(true);
      expect(msg).toMatch(re);
      expect(msg).not.toContain('\n');
    });
  }
});
