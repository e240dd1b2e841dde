/**
 * The tokenizer in a GGUF file, written from tokenizer.json so that llama.cpp tokenizes text exactly as
 * @huggingface/tokenizers does with that tokenizer.json, and read back from a GGUF file as a tokenizer.json object
 * (so `eval` tokenizes a GGUF's text as llama.cpp does).
 *
 * Styles, recognised by structure and exact pre-tokenizer patterns (never by model name):
 * - byte-level BPE (`tokenizer.ggml.model` "gpt2") with the pre-tokenizer llama.cpp names: `gpt-2` (a bare ByteLevel
 *   split: GPT-2 regex), `olmo` (the same with GPT-NeoX's NFC normalizer: OLMoE), `qwen2` (Qwen2/Qwen3's Split
 *   regex), `deepseek-v3` (DeepSeek-V3's three Splits), `deepseek-llm` (DeepSeek LLM / MoE / V2's five Splits and
 *   Digits(individual_digits), which llama.cpp splits as \p{N}+: written only when no merge joins two numeric
 *   characters, checked);
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

/** `\u{…}`, `\x{…}` and `\uXXXX` escapes of non-ASCII code points replaced by the characters (ASCII escapes kept). */
function unescapeCodePoints(p: string): string {
  return p.replace(/\\(\\|u\{([0-9A-Fa-f]{1,6})\}|x\{([0-9A-Fa-f]{1,6})\}|u([0-9A-Fa-f]{4}))/g, (all: string, _e: string, a?: string, b?: string, c?: string) => {
    const hex = a ?? b ?? c;
    if (hex === undefined) return all; // an escaped backslash
    const cp = parseInt(hex, 16);
    if (cp < 0x80 || cp > 0x10ffff) return all;
    return c !== undefined ? String.fromCharCode(cp) : String.fromCodePoint(cp); // \uD8xx\uDCxx pairs join up
  });
}

/**
 * DeepSeek LLM / DeepSeek-MoE / DeepSeek-V2's five Splits (llama.cpp's `deepseek-llm`, whose sixth regex \p{N}+
 * stands for tokenizer.json's Digits(individual_digits)). Written as code-point escapes: U+1F7D, U+1FBE, U+1FD3,
 * U+1FDB, U+2126 and U+212A have NFC forms (U+03CE, U+03B9, U+0390, U+038A, U+03A9, "K") that would change the
 * ranges; the llama.cpp binary of tools/llama-cpp (release v0.5.0) holds these exact code points.
 */
const DEEPSEEK_LLM_LETTERS =
  String.raw`A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}` +
  String.raw`\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}` +
  String.raw`\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}` +
  String.raw`\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}` +
  String.raw`\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}` +
  String.raw`\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}` +
  String.raw`\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}` +
  String.raw`\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}` +
  String.raw`\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}` +
  String.raw`\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}` +
  String.raw`\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}`;
const DEEPSEEK_LLM_PUNCT = String.raw`!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}`;
const DEEPSEEK_LLM_SPLITS = [
  String.raw`[\r\n]`,
  String.raw`\s?[${DEEPSEEK_LLM_LETTERS}]+`,
  String.raw`\s?[${DEEPSEEK_LLM_PUNCT}]+`,
  String.raw`\s+$`,
  String.raw`[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+`,
].map(unescapeCodePoints);

/**
 * What llama.cpp's `deepseek-llm` pre-tokenizer does, as tokenizer.json Splits (for reading GGUF files): the five
 * Splits, then runs of numeric characters kept whole (\p{N}+, not single digits); non-ASCII white space, which
 * llama.cpp turns into U+000B before its std::wregex splits, matches only \s and none of the character classes
 * (U+3000 is in the punctuation class; U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F and U+3000 are in
 * U+0800–U+4E00); and \s is llama.cpp's set (JavaScript's lacks U+0085 and has U+FEFF).
 */
const LLAMA_SPACE = String.raw`[\t-\r \u{85}\u{A0}\u{1680}\u{2000}-\u{200A}\u{2028}\u{2029}\u{202F}\u{205F}\u{3000}]`;
const DEEPSEEK_LLM_AS_LLAMA_CPP = [
  String.raw`[\r\n]`,
  String.raw`${LLAMA_SPACE}?[${DEEPSEEK_LLM_LETTERS}]+`,
  String.raw`${LLAMA_SPACE}?[${DEEPSEEK_LLM_PUNCT.replace(String.raw`\u{3000}`, String.raw`\u{3001}`)}]+`,
  String.raw`${LLAMA_SPACE}+$`,
  String.raw`[\u{4E00}-\u{9FA5}\u{800}-\u{167F}\u{1681}-\u{1FFF}\u{200B}-\u{2027}\u{202A}-\u{202E}\u{2030}-\u{205E}\u{2060}-\u{2FFF}\u{3001}-\u{4E00}\u{AC00}-\u{D7FF}]+`,
  String.raw`\p{N}+`,
].map(unescapeCodePoints);

/**
 * A pattern compared canonically: literal CR/LF as the escapes `\r`/`\n`, escaped non-ASCII code points as the
 * characters (tokenizer.json files use either; JSON's own `\uXXXX` escapes are gone once parsed).
 */
const canonical = (p: string) => unescapeCodePoints(p).replace(/\r/g, '\\r').replace(/\n/g, '\\n');

/**
 * The byte-level pre-tokenizers llama.cpp knows: name → the Split patterns before a regex-free ByteLevel, and
 * whether a Digits(individual_digits) comes between them.
 */
const SPLIT_STYLES: Array<{ name: string; splits: string[]; digits?: true }> = [
  { name: 'qwen2', splits: [QWEN2_SPLIT] },
  { name: 'deepseek-v3', splits: DEEPSEEK_V3_SPLITS },
  { name: 'deepseek-llm', splits: DEEPSEEK_LLM_SPLITS, digits: true },
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
  const digits = list.length >= 3 && isType(list[list.length - 2], 'Digits') && (list[list.length - 2] as Json)['individual_digits'] === true;
  const splits = list.slice(0, digits ? -2 : -1);
  if (!splits.every(isIsolatedSplit)) return null;
  const patterns = splits.map((s) => canonical(((s as Json)['pattern'] as Json)['Regex'] as string));
  for (const { name, splits: want, digits: withDigits } of SPLIT_STYLES) {
    if ((withDigits ?? false) === digits && want.length === patterns.length && want.every((p, i) => canonical(p) === patterns[i])) return name;
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
  'supported: byte-level BPE with a bare ByteLevel pre-tokenizer (GPT-2, OLMoE), the Qwen2/Qwen3, DeepSeek-V3 or DeepSeek LLM/MoE/V2 pre-tokenizers, ' +
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

/** GPT-2's byte-level alphabet: character → byte. */
const BYTE_OF = (() => {
  const bytes: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bytes.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bytes.push(b);
  for (let b = 0xae; b <= 0xff; b++) bytes.push(b);
  const map = new Map<string, number>(bytes.map((b) => [String.fromCodePoint(b), b]));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bytes.includes(b)) map.set(String.fromCodePoint(256 + n++), b);
  return map;
})();

/** A byte-level token's bytes as a latin1 string, or null when it is not made of byte-level characters. */
function tokenBytes(t: string): string | null {
  let out = '';
  for (const c of t) {
    const b = BYTE_OF.get(c);
    if (b === undefined) return null;
    out += String.fromCharCode(b);
  }
  return out;
}

/** Every suffix and every prefix of the UTF-8 encodings (latin1 strings) of the numeric characters (\p{N}). */
let numericAffixCache: { suffixes: Set<string>; prefixes: Set<string> } | null = null;
function numericAffixes(): { suffixes: Set<string>; prefixes: Set<string> } {
  if (numericAffixCache) return numericAffixCache;
  const suffixes = new Set<string>();
  const prefixes = new Set<string>();
  const isNumber = /^\p{N}$/u;
  for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const ch = String.fromCodePoint(cp);
    if (!isNumber.test(ch)) continue;
    const utf8 = Buffer.from(ch, 'utf8').toString('latin1');
    for (let i = 0; i < utf8.length; i++) suffixes.add(utf8.slice(i));
    for (let i = 1; i <= utf8.length; i++) prefixes.add(utf8.slice(0, i));
  }
  return (numericAffixCache = { suffixes, prefixes });
}

/**
 * deepseek-llm: tokenizer.json splits numeric characters apart (Digits with individual_digits), llama.cpp keeps a run
 * of them whole (\p{N}+) and lets BPE merge inside it. The first merge across a character boundary inside a run would
 * join the end of one numeric character to the start of another; when no merge does, both give the same tokens.
 * Checked here: a merge such as "1" + "9" is refused, naming it.
 */
function checkNumericMerges(merges: Array<[string, string]>, file: string): void {
  const { suffixes, prefixes } = numericAffixes();
  merges.forEach(([a, b], rank) => {
    const x = tokenBytes(a);
    const y = tokenBytes(b);
    if (x === null || y === null || !suffixes.has(x) || !prefixes.has(y)) return;
    const text = JSON.stringify(Buffer.from(x + y, 'latin1').toString('utf8'));
    throw fail(
      'UNSUPPORTED',
      `--format gguf: ${file}: merge ${rank} "${a} ${b}" joins two numeric characters (${text}): tokenizer.json's Digits(individual_digits) ` +
        `splits numbers into single characters first, llama.cpp's "deepseek-llm" pre-tokenizer keeps them whole (\\p{N}+), so numbers would tokenize differently`,
    );
  });
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
  if (style.pre === 'deepseek-llm') checkNumericMerges(merges, file);
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
  const splits = name === 'deepseek-llm' ? DEEPSEEK_LLM_AS_LLAMA_CPP : SPLIT_STYLES.find((s) => s.name === name)?.splits;
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
    throw fail('UNSUPPORTED', `${g.path}: pre-tokenizer "${pre}" cannot be read (gpt-2, olmo, ${SPLIT_STYLES.map((s) => s.name).join(', ')} can)`);
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
