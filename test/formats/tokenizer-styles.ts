/**
 * tokenizer.json files in the layouts real MoE models ship (not a test file itself): the trained fixtures' byte-level
 * vocabulary under the pre-tokenizers of OLMoE, Qwen2/Qwen3, DeepSeek-V3 and DeepSeek LLM/MoE/V2, and a small SentencePiece-style BPE
 * (test/fixtures/tokenizers/llama-spm, made by its make.py) laid out as Llama-2 / Mistral / Mixtral ship it.
 * The patterns are copied as the models' tokenizer.json files state them (DeepSeek-V3's with literal CR/LF).
 */
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, WIKI } from '../paths.js';

export const SPM_DIR = path.resolve(__dirname, '../fixtures/tokenizers/llama-spm');

const QWEN2 = JSON.parse(String.raw`"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"`) as string;
const DEEPSEEK_V3 = JSON.parse(
  String.raw`["\\p{N}{1,3}", "[一-龥\u3040-ゟ゠-ヿ]+", "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_` + '`' + String.raw`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"]`,
) as string[];
/** Characters of code-point ranges ("41-5A B5" → "A-Zµ"), so that no NFC lookalike can slip into a class. */
const chars = (ranges: string) =>
  ranges
    .split(' ')
    .map((r) => r.split('-').map((h) => String.fromCodePoint(parseInt(h, 16))).join('-'))
    .join('');
/**
 * DeepSeek LLM / DeepSeek-MoE / DeepSeek-V2's five Splits as their tokenizer.json states them (literal characters,
 * literal CR/LF in the first), then Digits(individual_digits) and a regex-free ByteLevel.
 */
export const DEEPSEEK_LLM = [
  '[\r\n]',
  `\\s?[${chars(
    '41-5A 61-7A B5 C0-D6 D8-F6 F8-1BA 1BC-1BF 1C4-293 295-2AF 370-373 376 377 37B-37D 37F 386 388-38A 38C 38E-3A1 3A3-3F5 3F7-481 48A-52F 531-556 ' +
      '10A0-10C5 13A0-13F5 13F8-13FD 1C90-1CBA 1CBD-1CBF 1D00-1D2B 1D6B-1D77 1D79-1D9A 1E00-1F15 1F18-1F1D 1F20-1F45 1F48-1F4D 1F50-1F57 1F59 1F5B ' +
      '1F5D 1F5F-1F7D 1F80-1FB4 1FB6-1FBC 1FBE 1FC2-1FC4 1FC6-1FCC 1FD0-1FD3 1FD6-1FDB 1FE0-1FEC 1FF2-1FF4 1FF6-1FFC 2102 2107 210A-2113 2115 ' +
      '2119-211D 2124 2126 2128 212A-212D 212F-2134 2139 213C-213F 2145-2149 214E 2183 2184 2C00-2C7B 2C7E-2CE4 2CEB-2CEE 2CF2 2CF3 A640-A66D ' +
      'A680-A69B A722-A76F A771-A787 A78B-A78E AB70-ABBF FB00-FB06 FB13-FB17 FF21-FF3A FF41-FF5A 10400-1044F 104B0-104D3 104D8-104FB ' +
      '10C80-10CB2 10CC0-10CF2 118A0-118DF 1E900-1E943',
  )}]+`,
  `\\s?[${chars('21-2F 3A-7E FF01-FF0F FF1A-FF5E 2018-201F 3000-3002')}]+`,
  '\\s+$',
  `[${chars('4E00-9FA5 800-4E00 AC00-D7FF')}]+`,
];
export const deepseekLlmPre = (splits = DEEPSEEK_LLM) => ({
  type: 'Sequence',
  pretokenizers: [...splits.map(split), { type: 'Digits', individual_digits: true }, byteLevel(false)],
});

/** Llama-3's split (llama.cpp knows it, but it comes with ignore_merges; not written). */
export const LLAMA3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

const split = (p: string) => ({ type: 'Split', pattern: { Regex: p }, behavior: 'Isolated', invert: false });
const byteLevel = (useRegex: boolean, trim = true) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: trim, use_regex: useRegex });

export interface Style {
  /** The model it stands for. */
  name: string;
  /** Fixture whose weights carry it (its embedding rows ≥ the vocabulary). */
  fixture: string;
  tokenizer: Record<string, unknown>;
  tokenizerConfig?: Record<string, unknown>;
  model: 'gpt2' | 'llama';
  pre: string;
}

/** GPT-2's byte-level characters → bytes. */
function byteLevelDecoder(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map = new Map(bs.map((b) => [String.fromCodePoint(b), b]));
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) map.set(String.fromCodePoint(256 + n++), b);
  return map;
}

/**
 * The merges "A B" where A is the end of a numeric character's UTF-8 and B the start of one (the fixtures' GPT-2
 * split kept numbers whole, so they have "0 0", "1 9", …; DeepSeek's vocabulary, trained with single digits, has none).
 */
export function numericMerges(merges: string[]): Set<string> {
  const dec = byteLevelDecoder();
  const ends = new Set<string>();
  const starts = new Set<string>();
  for (let cp = 0; cp < 0x110000; cp++) {
    if (cp >= 0xd800 && cp < 0xe000) continue;
    const ch = String.fromCodePoint(cp);
    if (!/\p{N}/u.test(ch)) continue;
    const b = Buffer.from(ch).toString('hex');
    for (let i = 0; i < b.length; i += 2) ends.add(b.slice(i));
    for (let i = 2; i <= b.length; i += 2) starts.add(b.slice(0, i));
  }
  const hex = (t: string) => Buffer.from(Array.from(t, (c) => dec.get(c) ?? 0)).toString('hex');
  return new Set(merges.filter((m) => { const [a, b] = m.split(' ') as [string, string]; return ends.has(hex(a)) && starts.has(hex(b)); }));
}

const read = (f: string) => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;

export function styles(): Style[] {
  const qwen = path.join(FIXTURES, 'tiny-qwen3-moe');
  const byte = () => read(path.join(qwen, 'tokenizer.json'));
  const spm = () => read(path.join(SPM_DIR, 'tokenizer.json'));
  const spmConfig = read(path.join(SPM_DIR, 'tokenizer_config.json'));
  return [
    { name: 'GPT-2 byte-level (fixtures)', fixture: qwen, tokenizer: byte(), model: 'gpt2', pre: 'gpt-2' },
    { name: 'OLMoE (GPT-NeoX: NFC + ByteLevel)', fixture: qwen, tokenizer: { ...byte(), normalizer: { type: 'NFC' } }, model: 'gpt2', pre: 'olmo' },
    {
      name: 'Qwen2/Qwen3 (NFC + Split + ByteLevel)',
      fixture: qwen,
      tokenizer: { ...byte(), normalizer: { type: 'NFC' }, pre_tokenizer: { type: 'Sequence', pretokenizers: [split(QWEN2), byteLevel(false, false)] } },
      model: 'gpt2',
      pre: 'qwen2',
    },
    {
      name: 'DeepSeek-V3 (3 Splits + ByteLevel)',
      fixture: path.join(FIXTURES, 'tiny-deepseek-v3'),
      tokenizer: { ...byte(), normalizer: { type: 'Sequence', normalizers: [] }, pre_tokenizer: { type: 'Sequence', pretokenizers: [...DEEPSEEK_V3.map(split), byteLevel(false)] } },
      model: 'gpt2',
      pre: 'deepseek-v3',
    },
    {
      name: 'DeepSeek LLM/MoE/V2 (5 Splits + Digits + ByteLevel)',
      fixture: path.join(FIXTURES, 'tiny-deepseek-v3'),
      tokenizer: (() => {
        const t = byte() as { model: { merges: string[] } };
        const drop = numericMerges(t.model.merges);
        return { ...t, normalizer: { type: 'Sequence', normalizers: [] }, pre_tokenizer: deepseekLlmPre(), model: { ...t.model, merges: t.model.merges.filter((m) => !drop.has(m)) } };
      })(),
      model: 'gpt2',
      pre: 'deepseek-llm',
    },
    { name: 'Llama-2/Mixtral SPM BPE (Prepend + Replace)', fixture: path.join(FIXTURES, 'tiny-mixtral'), tokenizer: spm(), tokenizerConfig: spmConfig, model: 'llama', pre: 'default' },
  ];
}

/** A model directory: the fixture's files linked, the style's tokenizer written. */
export function modelWithTokenizer(style: Style, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(style.fixture)) if (!f.startsWith('tokenizer')) fs.symlinkSync(path.join(style.fixture, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(style.tokenizer));
  if (style.tokenizerConfig) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(style.tokenizerConfig));
  return dir;
}

/** Text with code, digits, punctuation runs, CRLF, tabs, CJK, kana, Cyrillic, Greek, emoji (all NFC). */
export const MIXED = [
  'def f(x):\n\treturn [x**2 for x in range(10_000)]  # squares\r\n',
  "const s = `${a}+${b}`; if (i >= 3 && j != 4) { console.log('DON'T', \"it's\", I'LL, we've); }\n\n\n",
  'Numbers: 1 12 123 1234 12345 3.14159 1,000,000 2024-12-02 0x1F 1e-9 ½ ² ٣ ४\n',
  '日本語のテキスト、カタカナ・ひらがな。中文文本测试，龥龦。한국어 텍스트.\n',
  'Привет, мир! Ελληνικά κείμενα. naïve café façade Zürich São Paulo ǅ ß ﬁ\n',
  'Emoji 😀👍🏽 🇫🇷 — “quotes” ‘single’ … ¿qué? ¡sí! «ok» §§ ©®™ °C ±√∞\n',
  '   leading spaces,  double  spaces,\ttabs\t\tand trailing   \n \n  \r\n\r\nend',
  '!!!???... --- *** ::: ;;; ((( ))) [[[]]] {{{}}} <<<>>> @@@ ### $$$ %%% ^^^ &&& ||| ~~~ ```',
  "'s 'S 'RE 'Ve 'll x'd\u00a0nbsp\u2009thin\u3000ideographic",
].join('\n');

/** At least a few hundred KB of WikiText-2 test text, then MIXED. */
export function sampleText(chars = 400_000): string {
  return `${fs.readFileSync(WIKI, 'utf8').slice(0, chars)}\n${MIXED}`;
}

/**
 * Text for the deepseek-llm classes: ASCII numbers, Greek Extended (with the characters whose NFC forms are other
 * code points: U+1F7D, U+1FD3, U+1FDB, U+1FBE, U+2126, U+212A, each beside its NFC form), CJK, kana, Hangul
 * syllables and jamo, full-width forms, and non-ASCII spaces next to CJK characters and full-width punctuation.
 */
export const DEEPSEEK_TEXT = [
  'Numbers: 0 1 12 123 1234567890 3.14159 1,000,000 2024-12-02 x2 a1b2c3 v1.2.3 ０１２ 100%\n',
  'Ἐν ἀρχῇ ἦν ὁ λόγος, ὤ ῥήτωρ. \u1F7D\u03CE \u1FD3\u0390 \u1FDB\u038A \u1FBE\u03B9 \u2126\u03A9 \u212AK ᾳ ῼ ῤ Ῥ ΐ ΰ Ά\n',
  '中文文本测试，龥龦。日本語のテキスト、カタカナ。한국어 텍스트 ᄀᄁ 가힣 ힰ ＡＢＣ ａｂｃ！？\n',
  '中\u2009文 中\u3000文 。\u3000， ，\u3000\u3000x a\u0085b a\uFEFFb 中\u202F文 한\u3000국 x\u00A0y 中\u3000\n',
].join('');

