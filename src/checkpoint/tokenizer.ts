/** tokenizer.json (+ tokenizer_config.json) via @huggingface/tokenizers; no network, no Python. */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { fail } from '../errors.js';
import { GgufFile } from '../formats/gguf/file.js';
import { ggufPath } from '../formats/gguf/reader.js';
import { tokenizerJsonFromGguf } from '../formats/gguf/tokenizer.js';

export interface TextTokenizer {
  /** Token ids of `text` without added special tokens (the perplexity protocol tokenizes the raw text). */
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  vocabSize: number;
  /** Ids of tokenizer.json's special added tokens (end of text, chat markers, …). */
  specialIds: number[];
  /** sha256 of tokenizer.json: two models tokenize alike when it is equal. */
  hash: string;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw fail('BAD_CHECKPOINT', `${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * tokenizer.json's `Digits` pre-tokenizer as transformers (the Rust tokenizers) runs it: it isolates every numeric
 * character (`char::is_numeric`: Unicode N*, e.g. ½ ² ٣ ①), while @huggingface/tokenizers' Digits matches only 0–9.
 * Rewritten as the equivalent isolated Split on \p{N} (DeepSeek LLM/MoE/V2 tokenizers have one).
 */
export function withTransformersDigits<T>(pre: T): T {
  if (pre === null || typeof pre !== 'object') return pre;
  const o = pre as Record<string, unknown>;
  if (o['type'] === 'Digits')
    return { type: 'Split', pattern: { Regex: o['individual_digits'] ? '\\p{N}' : '\\p{N}+' }, behavior: 'Isolated', invert: false } as T;
  if (o['type'] === 'Sequence' && Array.isArray(o['pretokenizers'])) return { ...o, pretokenizers: o['pretokenizers'].map(withTransformersDigits) } as T;
  return pre;
}

/** Every tokenizer.json (a checkpoint's, or one rebuilt from a GGUF file) is run through here. */
function newTokenizer(json: object, config: object): Tokenizer {
  const pre = (json as { pre_tokenizer?: unknown }).pre_tokenizer ?? null;
  return new Tokenizer({ ...json, pre_tokenizer: withTransformersDigits(pre) }, config);
}

export function loadTokenizer(dir: string): TextTokenizer {
  const gguf = ggufPath(dir);
  if (gguf) {
    const g = GgufFile.open(gguf);
    try {
      const json = tokenizerJsonFromGguf(g) as { model: { vocab: object }; added_tokens: Array<{ id: number; special: boolean }> };
      const tok = newTokenizer(json, {});
      return {
        specialIds: json.added_tokens.filter((t) => t.special).map((t) => t.id),
        hash: createHash('sha256').update(JSON.stringify(json)).digest('hex'),
        encode: (text) => Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids),
        decode: (ids) => tok.decode(Array.from(ids), { skip_special_tokens: false }),
        vocabSize: Object.keys(json.model.vocab).length,
      };
    } finally {
      g.close();
    }
  }
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw fail('BAD_CHECKPOINT', `${file} is missing (moe-quant needs tokenizer.json to tokenize text)`);
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = fs.existsSync(configFile) ? readJson(configFile) : {};
  let tok: Tokenizer;
  try {
    tok = newTokenizer(readJson(file) as object, config as object);
  } catch (e) {
    throw fail('BAD_CHECKPOINT', `${file} could not be loaded: ${(e as Error).message}`);
  }
  const json = readJson(file) as { model?: { vocab?: object }; added_tokens?: Array<{ id?: unknown; special?: unknown }> };
  const vocabSize = json.model?.vocab ? Object.keys(json.model.vocab).length : 0;
  const specialIds = (json.added_tokens ?? []).filter((t) => t.special === true && typeof t.id === 'number').map((t) => t.id as number);
  return {
    specialIds,
    hash: createHash('sha256').update(fs.readFileSync(file)).digest('hex'),
    encode: (text) => Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids),
    decode: (ids) => tok.decode(Array.from(ids), { skip_special_tokens: false }),
    vocabSize,
  };
}
