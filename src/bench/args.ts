/** Command-line options of `npm run bench -- [options]`. */
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './proc.js';

/** Shapes of scripts/bench/make_real_shapes.py and the stages of --real. */
export const REAL_SHAPES = ['qwen3-30b-a3b', 'olmoe-1b-7b', 'deepseek-v2-lite', 'mixtral-8x7b'] as const;
export const REAL_STAGES = ['forward', 'torch', 'calibrate', 'quantize', 'reference'] as const;

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
  /** --real: the GEMM peak and the real-shape checkpoints instead of the sections above. */
  real: boolean;
  realShapes: string[];
  realLayers: number;
  realDir: string;
  realWindows: number;
  realSeqLen: number;
  realSamples: number;
  realStages: string[];
  /** Python with torch + transformers (torch comparisons, reference pipeline, generating checkpoints). */
  python: string | null;
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
  --json                print one JSON object instead of tables
  --python PATH         Python with torch and transformers (default .venv/bin/python, if present)

Real sizes (instead of everything above):
  --real                the GEMM peak, then per real shape: forward tok/s and fraction of the peak, calibrate
                        and quantize s/layer, transformers eager and the PyTorch reference pipeline side by side
  --real-shapes a,b     qwen3-30b-a3b,olmoe-1b-7b,deepseek-v2-lite,mixtral-8x7b (default: all four)
  --real-layers N       decoder layers per checkpoint (default 2)
  --real-dir DIR        where the checkpoints are (generated there once with scripts/bench/make_real_shapes.py
                        when missing; default .bench-tmp/real)
  --real-windows N      forward windows (default 16) of --real-seq-len tokens (default 512) of --data
  --real-samples N      calibration windows of 512 C4 tokens (default 32)
  --real-stages a,b     forward,torch,calibrate,quantize,reference (default: all)`;

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
    real: false,
    realShapes: [...REAL_SHAPES],
    realLayers: 2,
    realDir: path.join(REPO_ROOT, '.bench-tmp', 'real'),
    realWindows: 16,
    realSeqLen: 512,
    realSamples: 32,
    realStages: [...REAL_STAGES],
    python: null,
  };
  let python: string | undefined;
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
      case '--python':
        python = path.resolve(value() ?? '');
        break;
      case '--real':
        o.real = true;
        break;
      case '--real-shapes':
        o.realShapes = (value() ?? '').split(',').filter(Boolean);
        for (const sh of o.realShapes) if (!(REAL_SHAPES as readonly string[]).includes(sh)) throw new Error(`--real-shapes: unknown shape ${sh} (known: ${REAL_SHAPES.join(', ')})`);
        break;
      case '--real-layers':
        o.realLayers = positiveInt(flag, value());
        break;
      case '--real-dir':
        o.realDir = path.resolve(value() ?? '');
        break;
      case '--real-windows':
        o.realWindows = positiveInt(flag, value());
        break;
      case '--real-seq-len':
        o.realSeqLen = positiveInt(flag, value());
        break;
      case '--real-samples':
        o.realSamples = positiveInt(flag, value());
        break;
      case '--real-stages':
        o.realStages = (value() ?? '').split(',').filter(Boolean);
        for (const st of o.realStages) if (!(REAL_STAGES as readonly string[]).includes(st)) throw new Error(`--real-stages: unknown stage ${st} (known: ${REAL_STAGES.join(', ')})`);
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
  const venv = path.join(REPO_ROOT, '.venv', 'bin', 'python');
  o.python = python ?? (fs.existsSync(venv) ? venv : null);
  if (python && !fs.existsSync(python)) throw new Error(`--python ${python} does not exist`);
  return o;
}
