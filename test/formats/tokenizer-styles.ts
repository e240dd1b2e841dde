/**
 * tokenizer.json files in the layouts real MoE models ship (not a test file itself): the trained fixtures' byte-level
 * vocabulary under the pre-tokenizers of OLMoE, Qwen2/Qwen3 and DeepSeek-V3, and a small SentencePiece-style BPE
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
