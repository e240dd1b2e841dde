/**
 * The tokenizer in a GGUF file, written from tokenizer.json so that llama.cpp tokenizes text exactly as
 * @huggingface/tokenizers does with that tokenizer.json, and read back from a GGUF file as a tokenizer.json object
 * (so `eval` tokenizes a GGUF's text as llama.cpp does).
 *
 * Styles, recognised by structure and exact pre-tokenizer patterns (never by model name):
 * - byte-level BPE (`tokenizer.ggml.model` "gpt2") with the pre-tokenizer llama.cpp names: `gpt-2` (a bare ByteLevel
 *   split: GPT-2 regex), `olmo` (the same with GPT-NeoX's NFC normalizer: OLMoE), `qwen2` (Qwen2/Qwen3's Split
 *   regex), `deepseek-v3` (DeepSeek-V3's three Splits);
 * - SentencePiece-style BPE exported to tokenizer.json (byte_fallback, "▁" for spaces: Llama-2, Mistral, Mixtral) as
 *   llama.cpp's `llama` tokenizer, whose merge priority is the score of the merged piece: written as −(rank of the
 *   first merge that makes the piece), after checking that the merges are the complete, piece-ordered set an SPM
 *   export has (otherwise llama.cpp would merge pairs tokenizer.json never merges).
 * Anything else is refused before any work.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../../errors.js';
import { str, u32, bool, type GgufValue } from './file.js';
import type { GgufFile } from './file.js';

/** llama.cpp token types. */
const NORMAL = 1;
const UNKNOWN = 2;
const CONTROL = 3;
const USER_DEFINED = 4;
const UNUSED = 5;
const BYTE = 6;

/** The space marker of SentencePiece vocabularies. */
const SPACE = '\u2581';

type Json = Record<string, unknown>;
interface TokenizerJson {
  normalizer?: Json | null;
  pre_tokenizer?: Json | null;
  post_processor?: Json | null;
  decoder?: Json | null;
  model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]>; byte_fallback?: boolean; continuing_subword_prefix?: string | null; end_of_word_suffix?: string | null; ignore_merges?: boolean; unk_token?: string | null };
  added_tokens?: Array<{ id: number; content: string; special?: boolean }>;
}

/** The split patterns of llama.cpp's pre-tokenizers, exactly as the models' tokenizer.json files state them. */
const QWEN2_SPLIT = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const DEEPSEEK_V3_SPLITS = [
  String.raw`\p{N}{1,3}`,
  '[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+',
  String.raw`[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_` + '`' + String.raw`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
];

/** A pattern with literal CR/LF written as the escapes `\r`/`\n` (tokenizer.json files use either). */
const canonical = (p: string) => p.replace(/\r/g, '\\r').replace(/\n/g, '\\n');

/** The byte-level pre-tokenizers llama.cpp knows: name → the Split patterns before a regex-free ByteLevel. */
const SPLIT_STYLES: Array<[string, string[]]> = [
  ['qwen2', [QWEN2_SPLIT]],
  ['deepseek-v3', DEEPSEEK_V3_SPLITS],
];

/** `{type: X}` objects with exactly these fields (others absent or at their defaults). */
function isType(x: unknown, type: string): x is Json {
  return typeof x === 'object' && x !== null && (x as Json)['type'] === type;
}
function isSequence(x: unknown): x is Json & { pretokenizers?: unknown[]; normalizers?: unknown[]; decoders?: unknown[] } {
  return isType(x, 'Sequence');
}

/** A normalizer: none, NFC (ignored by llama.cpp: text must already be NFC), or SentencePiece's space escaping. */
function normalizerKind(n: unknown): 'none' | 'nfc' | 'spm-prefix' | 'spm' | null {
  if (n === null || n === undefined) return 'none';
  if (isType(n, 'NFC')) return 'nfc';
  if (isSequence(n) && Array.isArray(n.normalizers)) {
    const list = n.normalizers as Json[];
    if (list.length === 0) return 'none';
    if (list.length === 1 && isType(list[0], 'NFC')) return 'nfc';
    const isReplace = (x: Json | undefined) => isType(x, 'Replace') && (x['pattern'] as Json | undefined)?.['String'] === ' ' && x['content'] === SPACE;
    if (list.length === 2 && isType(list[0], 'Prepend') && list[0]['prepend'] === SPACE && isReplace(list[1])) return 'spm-prefix';
    if (list.length === 1 && isReplace(list[0])) return 'spm';
  }
  return null;
}

function isByteLevel(x: unknown, useRegex: boolean): boolean {
  return isType(x, 'ByteLevel') && !x['add_prefix_space'] && (x['use_regex'] !== false) === useRegex;
}
function isIsolatedSplit(x: unknown): x is Json {
  return isType(x, 'Split') && (x['behavior'] === 'Isolated' || x['behavior'] === 'isolated') && !x['invert'] && typeof (x['pattern'] as Json | undefined)?.['Regex'] === 'string';
}

/** The llama.cpp pre-tokenizer name of a byte-level pre_tokenizer, or null. */
function byteLevelPre(pre: unknown): string | null {
  if (isByteLevel(pre, true)) return 'gpt-2';
  if (!isSequence(pre) || !Array.isArray(pre.pretokenizers)) return null;
  const list = pre.pretokenizers;
  if (list.length < 2 || !isByteLevel(list[list.length - 1], false)) return null;
  const splits = list.slice(0, -1);
  if (!splits.every(isIsolatedSplit)) return null;
  const patterns = splits.map((s) => canonical(((s as Json)['pattern'] as Json)['Regex'] as string));
  for (const [name, want] of SPLIT_STYLES) {
    if (want.length === patterns.length && want.every((p, i) => canonical(p) === patterns[i])) return name;
  }
  return null;
}

/** A short description of a pre-tokenizer for error messages. */
function describe(x: unknown): string {
  if (x === null || x === undefined) return 'none';
  if (isSequence(x) && Array.isArray(x.pretokenizers)) return `Sequence[${x.pretokenizers.map(describe).join(', ')}]`;
  if (isType(x, 'Split')) {
    const p = (x['pattern'] as Json | undefined) ?? {};
    const pat = JSON.stringify(p['Regex'] ?? p['String'] ?? p);
    return `Split(${pat.length > 60 ? `${pat.slice(0, 57)}…"` : pat}, ${String(x['behavior'])})`;
  }
  if (isType(x, 'ByteLevel')) return `ByteLevel(add_prefix_space ${Boolean(x['add_prefix_space'])}, use_regex ${x['use_regex'] !== false})`;
  if (typeof x === 'object') {
    const { type, ...rest } = x as Json;
    return `${String(type)}(${Object.entries(rest).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(', ')})`;
  }
  return JSON.stringify(x);
}

export interface TokenizerStyle {
  /** `tokenizer.ggml.model`. */
  model: 'gpt2' | 'llama';
  /** `tokenizer.ggml.pre` (byte-level BPE). */
  pre?: string;
  /** llama: "▁" prepended to the text. */
  addSpacePrefix?: boolean;
}

const SUPPORTED =
  'supported: byte-level BPE with a bare ByteLevel pre-tokenizer (GPT-2, OLMoE), the Qwen2/Qwen3 or DeepSeek-V3 Split patterns, ' +
  'or SentencePiece-style BPE with byte_fallback (Llama-2, Mistral, Mixtral)';

/** Which llama.cpp tokenizer `tj` is; throws UNSUPPORTED naming `file` and what it found. */
export function tokenizerStyle(tj: TokenizerJson, file: string): TokenizerStyle {
  const m = tj.model ?? {};
  const refuse = (why: string) => fail('UNSUPPORTED', `--format gguf: ${file}: ${why} cannot be written as a llama.cpp tokenizer (${SUPPORTED})`);
  if (m.type !== 'BPE') throw refuse(`model type ${m.type}`);
  if ((m.continuing_subword_prefix ?? '') !== '' || (m.end_of_word_suffix ?? '') !== '') throw refuse('BPE with a subword prefix/suffix');
  if (m.ignore_merges) throw refuse('BPE with ignore_merges (Llama-3 style)');
  const norm = normalizerKind(tj.normalizer);
  if (m.byte_fallback) {
    // A Metaspace pre-tokenizer is refused: it adds "▁" only before text that does not start with a space, and
    // llama.cpp's add_space_prefix always adds it (" x" would tokenize differently).
    const noPre = (tj.pre_tokenizer ?? null) === null;
    const prefix = noPre && norm === 'spm-prefix' ? true : noPre && norm === 'spm' ? false : null;
    if (prefix === null) throw refuse(`SentencePiece-style BPE (byte_fallback) with normalizer ${describe(tj.normalizer)} and pre-tokenizer ${describe(tj.pre_tokenizer)}`);
    return { model: 'llama', addSpacePrefix: prefix };
  }
  const pre = byteLevelPre(tj.pre_tokenizer);
  if (pre === null) throw refuse(`pre-tokenizer ${describe(tj.pre_tokenizer)}`);
  if (norm !== 'none' && norm !== 'nfc') throw refuse(`normalizer ${describe(tj.normalizer)}`);
  if (!isType(tj.decoder, 'ByteLevel')) throw refuse(`decoder ${describe(tj.decoder)} with a byte-level pre-tokenizer`);
  return { model: 'gpt2', pre: pre === 'gpt-2' && norm === 'nfc' ? 'olmo' : pre };
}

/** merges as pairs. */
function mergePairs(m: TokenizerJson['model'] & object): Array<[string, string]> {
  return (m.merges ?? []).map((x) => {
    if (Array.isArray(x)) return [x[0], x[1]];
    const i = x.indexOf(' ', 1);
    return [x.slice(0, i), x.slice(i + 1)];
  });
}

/**
 * Scores for llama.cpp's SentencePiece BPE, which merges the adjacent pair whose concatenation is the highest-scored
 * token: −(rank of the first merge making the token), 0 for tokens no merge makes. Exact only when every split of a
 * token into two tokens is a merge and each token's merges are consecutive (an SPM export's merges): checked.
 */
function spmScores(tokens: string[], merges: Array<[string, string]>, file: string): number[] {
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => ids.set(t, i));
  const refuse = (why: string) =>
    fail('UNSUPPORTED', `--format gguf: ${file}: SentencePiece-style BPE whose merges are not an SPM export's (${why}): llama.cpp's "llama" tokenizer would tokenize differently`);
  const first = new Map<string, number>();
  const pairs = new Set<string>();
  let last = '';
  merges.forEach(([a, b], r) => {
    const t = a + b;
    pairs.add(`${a}\u0000${b}`);
    if (!first.has(t)) first.set(t, r);
    else if (t !== last) throw refuse(`the merges making "${t}" are not consecutive (rank ${first.get(t)} and ${r})`);
    last = t;
  });
  for (const t of tokens) {
    const cps = Array.from(t);
    for (let i = 1; i < cps.length; i++) {
      const a = cps.slice(0, i).join('');
      const b = cps.slice(i).join('');
      if (ids.has(a) && ids.has(b) && !pairs.has(`${a}\u0000${b}`)) throw refuse(`"${a}" + "${b}" makes token ${ids.get(t)} "${t}" but is no merge`);
    }
  }
  return tokens.map((t) => -(first.get(t) ?? 0));
}

/** A token's text in tokenizer_config.json (`"<s>"` or `{content: "<s>"}`). */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as Json)['content'] === 'string') return (v as Json)['content'] as string;
  return null;
}

/** The GGUF tokenizer keys for the model in `dir` (vocabSize rows in token_embd; extra rows become unused tokens). */
export function tokenizerMetadata(dir: string, vocabSize: number, config: Record<string, unknown>): Array<[string, GgufValue]> {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw fail('BAD_CHECKPOINT', `--format gguf needs ${file} (the tokenizer goes into the GGUF file)`);
  const tj = JSON.parse(fs.readFileSync(file, 'utf8')) as TokenizerJson;
  const style = tokenizerStyle(tj, file);
  const m = tj.model ?? {};
  const configFile = path.join(dir, 'tokenizer_config.json');
  const tc = (fs.existsSync(configFile) ? JSON.parse(fs.readFileSync(configFile, 'utf8')) : {}) as Json;

  const tokens: string[] = [];
  const types: number[] = [];
  for (const [tok, id] of Object.entries(m.vocab ?? {})) {
    tokens[id] = tok;
    types[id] = style.model === 'llama' && /^<0x[0-9A-Fa-f]{2}>$/.test(tok) ? BYTE : style.model === 'llama' && tok === m.unk_token ? UNKNOWN : NORMAL;
  }
  for (const t of tj.added_tokens ?? []) {
    tokens[t.id] = t.content;
    if (types[t.id] !== UNKNOWN && types[t.id] !== BYTE) types[t.id] = t.special ? CONTROL : USER_DEFINED;
  }
  if (tokens.length > vocabSize) throw fail('BAD_CHECKPOINT', `${file} has ${tokens.length} tokens but the embedding has ${vocabSize} rows`);
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = UNUSED;
    }
  }
  const merges = mergePairs(m);
  const meta: Array<[string, GgufValue]> = [['tokenizer.ggml.model', str(style.model)]];
  if (style.model === 'gpt2') {
    meta.push(
      ['tokenizer.ggml.pre', str(style.pre!)],
      ['tokenizer.ggml.tokens', { type: 'arr', of: 'str', value: tokens }],
      ['tokenizer.ggml.token_type', { type: 'arr', of: 'i32', value: types }],
      ['tokenizer.ggml.merges', { type: 'arr', of: 'str', value: merges.map(([a, b]) => `${a} ${b}`) }],
    );
  } else {
    meta.push(
      ['tokenizer.ggml.pre', str('default')],
      ['tokenizer.ggml.tokens', { type: 'arr', of: 'str', value: tokens }],
      ['tokenizer.ggml.scores', { type: 'arr', of: 'f32', value: spmScores(tokens, merges, file) }],
      ['tokenizer.ggml.token_type', { type: 'arr', of: 'i32', value: types }],
      ['tokenizer.ggml.add_space_prefix', bool(style.addSpacePrefix!)],
    );
  }

  // Special tokens: tokenizer_config.json's token strings, else config.json's ids (as convert_hf_to_gguf does).
  const index = new Map<string, number>();
  tokens.forEach((t, i) => {
    if (types[i] !== UNUSED && !index.has(t)) index.set(t, i);
  });
  const configId = (key: string) => {
    const v = config[key];
    return typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? (v[0] as number) : null;
  };
  const special = (name: string): number | null => {
    const text = tokenText(tc[`${name}_token`]);
    const fromText = text !== null ? index.get(text) : undefined;
    return fromText ?? configId(`${name}_token_id`);
  };
  const bos = special('bos');
  const eos = special('eos');
  const unk = style.model === 'llama' && m.unk_token ? (index.get(m.unk_token) ?? null) : null;
  const pad = special('pad');
  if (bos !== null) meta.push(['tokenizer.ggml.bos_token_id', u32(bos)]);
  if (eos !== null) meta.push(['tokenizer.ggml.eos_token_id', u32(eos)]);
  if (unk !== null) meta.push(['tokenizer.ggml.unknown_token_id', u32(unk)]);
  if (pad !== null) meta.push(['tokenizer.ggml.padding_token_id', u32(pad)]);
  const addBos = typeof tc['add_bos_token'] === 'boolean' ? (tc['add_bos_token'] as boolean) : bos !== null && templateStartsWith(tj.post_processor, tokens[bos]!);
  meta.push(['tokenizer.ggml.add_bos_token', bool(addBos && bos !== null)]);
  meta.push(['tokenizer.ggml.add_eos_token', bool(tc['add_eos_token'] === true && eos !== null)]);
  return meta;
}

/** Whether a TemplateProcessing post-processor puts `token` first (tokenizer.json's way of adding BOS). */
function templateStartsWith(pp: unknown, token: string): boolean {
  if (!isType(pp, 'TemplateProcessing') || !Array.isArray(pp['single'])) return false;
  const head = (pp['single'] as Json[])[0];
  return ((head?.['SpecialToken'] as Json | undefined)?.['id'] ?? null) === token;
}

/** The pre_tokenizer JSON that splits text as llama.cpp's byte-level pre-tokenizer `name` does. */
function preTokenizerJson(name: string): object | null {
  const byteLevel = (useRegex: boolean) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
  if (name === 'gpt-2' || name === 'olmo' || name === 'default') return byteLevel(true);
  const splits = SPLIT_STYLES.find(([n]) => n === name)?.[1];
  if (!splits) return null;
  return {
    type: 'Sequence',
    pretokenizers: [...splits.map((p) => ({ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false })), byteLevel(false)],
  };
}

/** A tokenizer.json object rebuilt from a GGUF file's tokenizer (the styles this file writes). */
export function tokenizerJsonFromGguf(g: GgufFile): object {
  const model = g.get('tokenizer.ggml.model');
  const pre = String(g.get('tokenizer.ggml.pre') ?? 'default');
  if (model !== 'gpt2' && model !== 'llama') throw fail('UNSUPPORTED', `${g.path}: tokenizer.ggml.model "${String(model)}" cannot be read ("gpt2" and "llama" can)`);
  const preTokenizer = model === 'gpt2' ? preTokenizerJson(pre) : null;
  if (model === 'gpt2' && !preTokenizer)
    throw fail('UNSUPPORTED', `${g.path}: pre-tokenizer "${pre}" cannot be read (gpt-2, olmo, ${SPLIT_STYLES.map(([n]) => n).join(', ')} can)`);
  const tokens = g.get('tokenizer.ggml.tokens') as string[] | undefined;
  const types = (g.get('tokenizer.ggml.token_type') as number[] | undefined) ?? [];
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
  const base = { version: '1.0', truncation: null, padding: null, added_tokens: added, post_processor: null };
  if (model === 'gpt2') {
    const merges = (g.get('tokenizer.ggml.merges') as string[] | undefined) ?? [];
    return {
      ...base,
      normalizer: null,
      pre_tokenizer: preTokenizer,
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
    };
  }
  // SentencePiece BPE: the merges llama.cpp's score order implies — every split of a token into two tokens, tokens
  // by descending score (ties by id), splits by the ids of their parts (transformers' SentencePieceExtractor order).
  const scores = (g.get('tokenizer.ggml.scores') as number[] | undefined) ?? [];
  const order = tokens.map((_, i) => i).filter((i) => (types[i] ?? NORMAL) !== UNUSED && (types[i] ?? NORMAL) !== BYTE);
  order.sort((a, b) => (scores[b] ?? 0) - (scores[a] ?? 0) || a - b);
  const merges: Array<[string, string]> = [];
  for (const i of order) {
    const cps = Array.from(tokens[i]!);
    const local: Array<[string, string]> = [];
    for (let k = 1; k < cps.length; k++) {
      const a = cps.slice(0, k).join('');
      const b = cps.slice(k).join('');
      if (vocab[a] !== undefined && vocab[b] !== undefined) local.push([a, b]);
    }
    local.sort((x, y) => vocab[x[0]]! - vocab[y[0]]! || vocab[x[1]]! - vocab[y[1]]!);
    merges.push(...local);
  }
  const unkId = g.get('tokenizer.ggml.unknown_token_id');
  const prefix = g.get('tokenizer.ggml.add_space_prefix') !== false;
  const replace = { type: 'Replace', pattern: { String: ' ' }, content: SPACE };
  return {
    ...base,
    normalizer: { type: 'Sequence', normalizers: prefix ? [{ type: 'Prepend', prepend: SPACE }, replace] : [replace] },
    pre_tokenizer: null,
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: SPACE }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : [])],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: typeof unkId === 'number' ? (tokens[unkId] ?? null) : null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges,
    },
  };
}
