/**
 * `npm run bench -- [options]`: forward-pass throughput and memory of the onnxruntime engine.
 *  1. Each fixture in its own process (fixture-worker.js): fp32 tokens/s at seq-len 256 warm and including setup,
 *     share of wall time inside onnxruntime session.run, peak RSS.
 *  2. A generated ≥4 GB bf16 Mixtral-layout checkpoint (cached in .bench-tmp/), run layer by layer with
 *     cacheBytes 0 in its own process (large-worker.js): peak RSS and seconds for 512 tokens.
 *     Then the same windows on one parallel worker per core (ParallelNll), the path `moe-quant eval` takes on more data.
 *  3. With --torch and .venv/bin/python present: PyTorch eager tokens/s on the same windows, and the ratio.
 *  4. Calibrate vs eval and quantize per method (pipeline-worker.js), one large GPTQ solve (gptq-worker.js), and
 *     EBSS generation per fixture (ebss-worker.js): tokens/s, wall time, step time at three positions.
 *  5. Output formats (format-worker.js): write time and size of GPTQ and of GGUF per type, round-to-nearest weights.
 * With --real, instead: the GEMM peak and real models' layer shapes (real.ts).
 * Progress goes to stderr; the result (tables, or one JSON object with --json) to stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { C4_SAMPLE, parseArgs } from './args.js';
import type { FixtureResult } from './fixture-worker.js';
import type { LargeRunResult } from './large-worker.js';
import { runNodeWorker, tail, type ChildResult } from './proc.js';
import type { PipelineResult } from './pipeline-worker.js';
import type { EbssBenchResult } from './ebss-worker.js';
import type { FormatBenchResult } from './format-worker.js';
import { ebssTable, fixtureTable, formatTable, largeTable, parallelTable, pipelineTable, realTables, type FixtureRow, type LargeReport } from './report.js';
import type { GenerateResult } from './synth.js';
import { runTorch } from './torch.js';
import { runReal } from './real.js';

/** Target peak RSS of the large-model run (1.5 GB, decimal). */
const TARGET_RSS_MB = 1.5e9 / 2 ** 20;

const log = (s: string) => process.stderr.write(`${s}\n`);
const failed = (r: ChildResult<unknown>) => ({ error: `worker exited with ${r.code}: ${tail(r.stderr, 3)}` });

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(o.data)) throw new Error(`data file ${o.data} does not exist (--data)`);
  if (o.real) {
    const loadBefore = os.loadavg()[0]!;
    const report = await runReal(o);
    const machine = { cpus: os.availableParallelism(), cpuModel: os.cpus()[0]?.model.trim(), loadavg1mBefore: loadBefore, loadavg1mAfter: os.loadavg()[0]! };
    if (o.json) process.stdout.write(`${JSON.stringify({ options: o, machine, real: report }, null, 2)}\n`);
    else process.stdout.write(`${realTables(report, machine)}\n`);
    return;
  }
  const python = o.torch ? o.python : null;
  if (o.torch && !python) log('bench: --torch given but there is no Python (.venv/bin/python or --python); PyTorch comparison skipped');

  const loadBefore = os.loadavg()[0]!;
  const fixtures: FixtureRow[] = [];
  for (const dir of o.fixtures) {
    const fixture = path.basename(dir);
    log(`bench: ${fixture}: ${o.windows}×${o.seqLen} tokens, 1 cold + ${o.repeats} warm runs…`);
    const r = await runNodeWorker<FixtureResult>('fixture-worker.js', [dir, o.data, String(o.windows), String(o.seqLen), String(o.repeats)], [], false);
    const row: FixtureRow = { fixture, node: r.result ?? failed(r) };
    if (python) {
      log(`bench: ${fixture}: PyTorch eager…`);
      row.torch = await runTorch(python, dir, o.data, o.windows, o.seqLen, o.repeats);
    }
    fixtures.push(row);
  }

  let large: LargeReport | null = null;
  if (!o.skipLarge) {
    log(`bench: large checkpoint in ${o.largeDir} (generated once, then reused)…`);
    const g = await runNodeWorker<GenerateResult & { peakRssMb: number }>('large-worker.js', ['generate', o.largeDir], [], false);
    large = { generate: g.result ?? failed(g), run: null, targetRssMb: TARGET_RSS_MB };
    if (g.result) {
      log(`bench: large model, ${o.largeSeqs}×${o.largeSeqLen} tokens…`);
      const r = await runNodeWorker<LargeRunResult>('large-worker.js', ['run', o.largeDir, String(o.largeSeqs), String(o.largeSeqLen)], [], false);
      large.run = r.result ?? failed(r);
    }
  }

  const pipeline: Array<PipelineResult | { fixture: string; error: string }> = [];
  if (!o.skipPipeline) {
    for (const dir of o.fixtures) {
      log(`bench: ${path.basename(dir)}: eval vs calibrate over ${o.pipelineSamples}×512 C4 tokens, quantize rtn/gptq/agq…`);
      const r = await runNodeWorker<PipelineResult>('pipeline-worker.js', [dir, C4_SAMPLE, String(o.pipelineSamples), '512'], [], false);
      pipeline.push(r.result ?? { fixture: path.basename(dir), ...failed(r) });
    }
  }
  type GptqSolve = { N: number; K: number; seconds: number; coldSeconds: number; threads: string | number };
  let gptq: GptqSolve | { error: string } | null = null;
  if (!o.skipGptq) {
    log(`bench: one GPTQ solve, K = N = ${o.gptqSize}…`);
    const r = await runNodeWorker<GptqSolve>('gptq-worker.js', [String(o.gptqSize), String(o.gptqSize)], [], false);
    gptq = r.result ?? failed(r);
  }

  const ebss: Array<EbssBenchResult | { fixture: string; error: string }> = [];
  if (!o.skipEbss) {
    for (const dir of o.fixtures) {
      log(`bench: ${path.basename(dir)}: EBSS ${o.ebssSamples}×${o.ebssSeqLen}, width 4…`);
      const r = await runNodeWorker<EbssBenchResult>('ebss-worker.js', [dir, String(o.ebssSamples), String(o.ebssSeqLen)], [], false);
      ebss.push(r.result ?? { fixture: path.basename(dir), ...failed(r) });
    }
  }

  const formats: Array<FormatBenchResult | { fixture: string; error: string }> = [];
  if (!o.skipFormats) {
    for (const dir of o.fixtures) {
      log(`bench: ${path.basename(dir)}: output formats (GPTQ, GGUF per type)…`);
      const r = await runNodeWorker<FormatBenchResult>('format-worker.js', [dir], [], false);
      formats.push(r.result ?? { fixture: path.basename(dir), ...failed(r) });
    }
  }

  const machine = { cpus: os.availableParallelism(), loadavg1mBefore: loadBefore, loadavg1mAfter: os.loadavg()[0]! };
  const busy = Math.max(machine.loadavg1mBefore, machine.loadavg1mAfter) > machine.cpus * 0.5;
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ options: o, machine, fixtures, large, pipeline, gptq, ebss, formats }, null, 2)}\n`);
    return;
  }
  const out = [`Forward pass, fp32 on CPU, ${o.windows} windows × ${o.seqLen} tokens of ${path.basename(o.data)}, head 'nll'`];
  out.push(fixtureTable(fixtures, !!python), '');
  out.push('warm: median of warm runs; incl. setup: createEngine + first run (sessions, weights); ORT share: time in session.run / wall');
  if (python) {
    const t = fixtures.map((f) => f.torch).find((x): x is Exclude<typeof x, { error: string } | undefined> => !!x && !('error' in x));
    if (t) out.push(`torch: PyTorch ${t.torch} eager, transformers ${t.transformers}, ${t.threads} threads, same windows and batches`);
    for (const f of fixtures) if (f.torch && 'error' in f.torch) out.push(`torch ${f.fixture}: ${f.torch.error}`);
  }
  const parallel = parallelTable(fixtures, !!python);
  if (parallel)
    out.push(
      '',
      'The same windows on parallel workers (ParallelNll: one engine per worker thread, cores split between them; what `moe-quant eval` runs once there are two batches per worker)',
      parallel,
      'incl. setup: worker start + first run; ORT share: time in session.run summed over workers / (wall × workers)',
    );
  if (busy)
    out.push(
      `warning: the machine was busy (1-min load ${machine.loadavg1mBefore.toFixed(1)} before, ${machine.loadavg1mAfter.toFixed(1)} after, ` +
        `${machine.cpus} CPUs): timings are unreliable; compare "best" columns`,
    );
  if (large) out.push('', 'Large model (random weights, Mixtral layout), createEngine(dir, { device: "cpu", cacheBytes: 0 })', largeTable(large));
  if (pipeline.length) out.push('', `Calibrate vs eval over the same ${o.pipelineSamples} × 512 C4 tokens; quantize wall time per method (4-bit, group 128)`, pipelineTable(pipeline));
  if (gptq)
    out.push(
      '',
      'error' in gptq
        ? `GPTQ solve: ${gptq.error}`
        : `Largest single GPTQ solve (Cholesky + inverse + column loop), K = N = ${gptq.K}, group 128: ${gptq.seconds.toFixed(2)} s warm, ${gptq.coldSeconds.toFixed(2)} s with session creation` +
            ' (PyTorch side by side: scripts/quant-reference/README.md)',
    );
  if (ebss.length)
    out.push('', `EBSS generation, ${o.ebssSamples} samples × ${o.ebssSeqLen} tokens, width 4, τ 1.2 (target: ≤ 5 minutes on 2 cores)`, ebssTable(ebss));
  if (formats.length)
    out.push('', 'Output formats: write time (round-to-nearest weights: grid fit, packing, writing; no calibration) and size; K-quants fall back where rows are not 256-multiples', formatTable(formats));
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
