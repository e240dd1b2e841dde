/** Command-line options of `npm run bench -- [options]`. */
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './proc.js';

export interface BenchOptions {
  fixtures: string[];
  data: string;
  windows: number;
  seqLen: number;
  repeats: number;
  json: boolean;
  torch: boolean;
  skipLarge: boolean;
  largeDir: string;
  largeSeqs: number;
  largeSeqLen: number;
  skipPipeline: boolean;
  /** Calibration windows for the calibrate/quantize timings (of 512 tokens). */
  pipelineSamples: number;
  skipGptq: boolean;
  skipFormats: boolean;
  gptqSize: number;
  skipEbss: boolean;
  /** EBSS samples and their length for the generation timing. */
  ebssSamples: number;
  ebssSeqLen: number;
}

export const USAGE = `usage: npm run bench -- [options]
  --fixtures a,b        fixture names (under ../shared/fixtures) or model directories
                        (default: tiny-mixtral,tiny-qwen3-moe,tiny-deepseek-v3)
  --windows N           windows per fixture (default 40)
  --seq-len N           tokens per window (default 256)
  --repeats N           warm runs per fixture, median reported (default 5)
  --data FILE           text data (default ../shared/data/wikitext-2-raw/wiki.test.raw)
  --torch               also run scripts/bench/torch_eager.py with .venv/bin/python, if present
  --skip-large          skip the generated ≥4 GB Mixtral-layout checkpoint
  --skip-pipeline       skip calibrate-vs-eval and quantize timings
  --pipeline-samples N  calibration windows of 512 tokens for those timings (default 128)
  --skip-gptq           skip the single large GPTQ solve
  --skip-formats        skip the output-format write times and sizes (GPTQ, GGUF per type)
  --gptq-size N         its K = N (default 4096)
  --skip-ebss           skip the EBSS generation timing
  --ebss-samples N      EBSS samples (default 128) of --ebss-seq-len tokens (default 512), width 4
  --json                print one JSON object instead of tables`;

const SHARED = path.resolve(REPO_ROOT, '..', 'shared');
/** Calibration text for the calibrate/quantize timings (C4 slice in ../shared/data). */
export const C4_SAMPLE = path.join(SHARED, 'data', 'c4', 'c4-en-train.00000-of-01024.first1000.jsonl');
const DEFAULT_FIXTURES = ['tiny-mixtral', 'tiny-qwen3-moe', 'tiny-deepseek-v3'];

function resolveFixture(name: string): string {
  if (name.includes('/') || fs.existsSync(name)) return path.resolve(name);
  return path.join(SHARED, 'fixtures', name);
}

function positiveInt(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer (got ${v})`);
  return n;
}

export function parseArgs(argv: string[]): BenchOptions {
  const o: BenchOptions = {
    fixtures: DEFAULT_FIXTURES.map(resolveFixture),
    data: path.join(SHARED, 'data', 'wikitext-2-raw', 'wiki.test.raw'),
    windows: 40,
    seqLen: 256,
    repeats: 5,
    json: false,
    torch: false,
    skipLarge: false,
    largeDir: path.join(REPO_ROOT, '.bench-tmp', 'mixtral-4gb'),
    skipPipeline: false,
    pipelineSamples: 128,
    skipGptq: false,
    skipFormats: false,
    gptqSize: 4096,
    skipEbss: false,
    ebssSamples: 128,
    ebssSeqLen: 512,
    largeSeqs: 2,
    largeSeqLen: 256,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--fixtures':
        o.fixtures = (value() ?? '').split(',').filter(Boolean).map(resolveFixture);
        break;
      case '--windows':
        o.windows = positiveInt(flag, value());
        break;
      case '--seq-len':
        o.seqLen = positiveInt(flag, value());
        break;
      case '--repeats':
        o.repeats = positiveInt(flag, value());
        break;
      case '--data':
        o.data = path.resolve(value() ?? '');
        break;
      case '--json':
        o.json = true;
        break;
      case '--torch':
        o.torch = true;
        break;
      case '--skip-large':
        o.skipLarge = true;
        break;
      case '--skip-pipeline':
        o.skipPipeline = true;
        break;
      case '--pipeline-samples':
        o.pipelineSamples = positiveInt(flag, value());
        break;
      case '--skip-gptq':
        o.skipGptq = true;
        break;
      case '--skip-formats':
        o.skipFormats = true;
        break;
      case '--gptq-size':
        o.gptqSize = positiveInt(flag, value());
        break;
      case '--skip-ebss':
        o.skipEbss = true;
        break;
      case '--ebss-samples':
        o.ebssSamples = positiveInt(flag, value());
        break;
      case '--ebss-seq-len':
        o.ebssSeqLen = positiveInt(flag, value());
        break;
      case '--help':
      case '-h':
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
      // falls through (unreachable)
      default:
        throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  }
  return o;
}
