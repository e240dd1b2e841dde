/**
 * The tokenizer in a GGUF file: byte-level BPE (`tokenizer.ggml.model` "gpt2") with tokens, token types, merges and
 * the pre-tokenizer name llama.cpp uses to split text. Written from tokenizer.json; read back as a tokenizer.json
 * object that @huggingface/tokenizers loads, so `eval` tokenizes a GGUF's text exactly as llama.cpp does.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../../errors.js';
import { str, u32, bool, type GgufValue } from './file.js';
import type { GgufFile } from './file.js';

/** llama.cpp token types. */
const NORMAL = 1;
const CONTROL = 3;
const USER_DEFINED = 4;
const UNUSED = 5;

interface TokenizerJson {
  normalizer?: unknown;
  pre_tokenizer?: { type?: string; add_prefix_space?: boolean; use_regex?: boolean } | null;
  decoder?: { type?: string } | null;
  model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]>; byte_fallback?: boolean; continuing_subword_prefix?: string | null; end_of_word_suffix?: string | null };
  added_tokens?: Array<{ id: number; content: string; special?: boolean }>;
}

/** The GGUF tokenizer keys for the model in `dir` (vocabSize rows in token_embd; extra rows become unused tokens). */
export function tokenizerMetadata(dir: string, vocabSize: number, config: Record<string, unknown>): Array<[string, GgufValue]> {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw fail('BAD_CHECKPOINT', `--format gguf needs ${file} (the tokenizer goes into the GGUF file)`);
  const tj = JSON.parse(fs.readFileSync(file, 'utf8')) as TokenizerJson;
  const m = tj.model ?? {};
  const pre = tj.pre_tokenizer;
  const why =
    m.type !== 'BPE' ? `model type ${m.type} (byte-level BPE is written)`
    : m.byte_fallback ? 'BPE with byte_fallback (SentencePiece-style)'
    : (m.continuing_subword_prefix ?? '') !== '' || (m.end_of_word_suffix ?? '') !== '' ? 'BPE with a subword prefix/suffix'
    : tj.normalizer ? 'a normalizer'
    : pre?.type !== 'ByteLevel' || pre.add_prefix_space || pre.use_regex === false ? `pre-tokenizer ${JSON.stringify(pre)} (the GPT-2 byte-level split is written)`
    : tj.decoder?.type !== 'ByteLevel' ? `decoder ${tj.decoder?.type}`
    : null;
  if (why) throw fail('UNSUPPORTED', `--format gguf: ${file}: ${why} cannot be written as a llama.cpp tokenizer`);
  const tokens: string[] = [];
  const types: number[] = [];
  for (const [tok, id] of Object.entries(m.vocab ?? {})) {
    tokens[id] = tok;
    types[id] = NORMAL;
  }
  for (const t of tj.added_tokens ?? []) {
    tokens[t.id] = t.content;
    types[t.id] = t.special ? CONTROL : USER_DEFINED;
  }
  if (tokens.length > vocabSize) throw fail('BAD_CHECKPOINT', `${file} has ${tokens.length} tokens but the embedding has ${vocabSize} rows`);
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = UNUSED;
    }
  }
  const merges = (m.merges ?? []).map((x) => (Array.isArray(x) ? x.join(' ') : x));
  const meta: Array<[string, GgufValue]> = [
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str('gpt-2')],
    ['tokenizer.ggml.tokens', { type: 'arr', of: 'str', value: tokens }],
    ['tokenizer.ggml.token_type', { type: 'arr', of: 'i32', value: types }],
    ['tokenizer.ggml.merges', { type: 'arr', of: 'str', value: merges }],
  ];
  const id = (key: string) => {
    const v = config[key];
    return typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? (v[0] as number) : null;
  };
  const eos = id('eos_token_id');
  const bos = id('bos_token_id');
  if (eos !== null) meta.push(['tokenizer.ggml.eos_token_id', u32(eos)]);
  if (bos !== null) meta.push(['tokenizer.ggml.bos_token_id', u32(bos)]);
  meta.push(['tokenizer.ggml.add_bos_token', bool(false)]);
  return meta;
}

/** A tokenizer.json object rebuilt from a GGUF file's byte-level BPE tokenizer. */
export function tokenizerJsonFromGguf(g: GgufFile): object {
  const model = g.get('tokenizer.ggml.model');
  const pre = g.get('tokenizer.ggml.pre') ?? 'default';
  if (model !== 'gpt2') throw fail('UNSUPPORTED', `${g.path}: tokenizer.ggml.model "${String(model)}" cannot be read (byte-level BPE "gpt2" can)`);
  if (pre !== 'gpt-2' && pre !== 'default') throw fail('UNSUPPORTED', `${g.path}: pre-tokenizer "${String(pre)}" cannot be read (gpt-2 can)`);
  const tokens = g.get('tokenizer.ggml.tokens') as string[] | undefined;
  const types = (g.get('tokenizer.ggml.token_type') as number[] | undefined) ?? [];
  const merges = (g.get('tokenizer.ggml.merges') as string[] | undefined) ?? [];
  if (!Array.isArray(tokens)) throw fail('BAD_CHECKPOINT', `${g.path}: tokenizer.ggml.tokens is missing`);
  const vocab: Record<string, number> = {};
  const added: object[] = [];
  tokens.forEach((t, i) => {
    const ty = types[i] ?? NORMAL;
    if (ty === UNUSED) return;
    vocab[t] = i;
    if (ty === CONTROL || ty === USER_DEFINED)
      added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: ty === CONTROL });
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
}
