/** Plain-text tables for the benchmark results. */
import type { FixtureResult } from './fixture-worker.js';
import type { LargeRunResult } from './large-worker.js';
import type { GenerateResult } from './synth.js';
import type { TorchResult } from './torch.js';
import type { EbssBenchResult } from './ebss-worker.js';
import type { FormatBenchResult } from './format-worker.js';
import type { PipelineResult } from './pipeline-worker.js';
import type { RealReport } from './real.js';
import { wholeModel, type WholeModel } from './extrapolate.js';

export interface FixtureRow {
  fixture: string;
  node: FixtureResult | { error: string };
  torch?: TorchResult | { error: string };
}

export interface LargeReport {
  generate: (GenerateResult & { peakRssMb: number }) | { error: string };
  run: LargeRunResult | { error: string } | null;
  targetRssMb: number;
}

const ok = <T extends object>(r: T | { error: string } | undefined): r is T => !!r && !('error' in r);

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

const f0 = (x: number) => Math.round(x).toLocaleString('en-US');
const f1 = (x: number) => x.toFixed(1);
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

export function fixtureTable(rows: FixtureRow[], withTorch: boolean): string {
  const head = ['fixture', 'warm tok/s', 'best tok/s', 'incl. setup tok/s', 'ORT share', 'peak RSS MB', 'ppl (ref)'];
  if (withTorch) head.push('torch tok/s', 'torch best', 'node/torch', 'best/best');
  const body = rows.map((r) => {
    if (!ok(r.node)) return [r.fixture, `error: ${r.node.error}`];
    const n = r.node;
    const best = n.bestTokensPerSec;
    const cells = [
      r.fixture,
      f0(n.warmTokensPerSec),
      f0(best),
      f0(n.coldTokensPerSec),
      pct(n.ortShare),
      f0(n.peakRssMb),
      `${n.ppl.toFixed(3)} (${n.referencePpl === null ? '-' : n.referencePpl.toFixed(3)})`,
    ];
    if (withTorch) {
      const t = r.torch;
      if (ok(t))
        cells.push(
          f0(t.warmTokensPerSec),
          f0(t.bestTokensPerSec),
          `${(n.warmTokensPerSec / t.warmTokensPerSec).toFixed(2)}×`,
          `${(best / t.bestTokensPerSec).toFixed(2)}×`,
        );
      else cells.push(t ? 'error' : '-', '-', '-', '-');
    }
    return cells;
  });
  return table(head, body);
}

/** The same windows on one parallel worker per core (ParallelNll), against the same PyTorch runs. */
export function parallelTable(rows: FixtureRow[], withTorch: boolean): string {
  const head = ['fixture', 'workers × threads', 'batch tokens', 'warm tok/s', 'best tok/s', 'incl. setup tok/s', 'ORT share', 'peak RSS MB', 'ppl'];
  if (withTorch) head.push('node/torch', 'best/best');
  const body = rows.flatMap((r) => {
    if (!ok(r.node) || !r.node.parallel) return [];
    const p = r.node.parallel;
    const cells = [r.fixture, `${p.workers} × ${p.threadsPerWorker}`, f0(p.batchTokens), f0(p.warmTokensPerSec), f0(p.bestTokensPerSec), f0(p.coldTokensPerSec), pct(p.ortShare), f0(p.peakRssMb), p.ppl.toFixed(3)];
    if (withTorch) {
      const t = r.torch;
      if (ok(t)) cells.push(`${(p.warmTokensPerSec / t.warmTokensPerSec).toFixed(2)}×`, `${(p.bestTokensPerSec / t.bestTokensPerSec).toFixed(2)}×`);
      else cells.push('-', '-');
    }
    return [cells];
  });
  return body.length ? table(head, body) : '';
}

export function largeTable(r: LargeReport): string {
  const lines: string[] = [];
  if (ok(r.generate)) {
    const g = r.generate;
    lines.push(
      `checkpoint: ${g.dir} — ${(g.totalBytes / 1e9).toFixed(2)} GB bf16 in ${g.shards} shards, ` +
        (g.reused ? 'reused from cache' : `generated in ${f1(g.seconds)} s with peak RSS ${f0(g.peakRssMb)} MB`),
    );
  } else lines.push(`checkpoint: error: ${r.generate.error}`);
  const x = r.run;
  if (x === null) return lines.join('\n');
  if ('error' in x) return [...lines, `run: error: ${x.error}`].join('\n');
  const head = ['tokens', 'setup s', 'run s', 'total s', 'ORT s', 'peak RSS MB', '< 1.5 GB', 'JS buffers MB', 'other MB', 'layer f32 MB', 'lm_head f32 MB'];
  const body = [
    [
      String(x.tokens),
      f1(x.setupSeconds),
      f1(x.runSeconds),
      f1(x.seconds),
      f1(x.ortSeconds),
      f0(x.peakRssMb),
      x.peakRssMb < r.targetRssMb ? 'yes' : 'NO',
      f0(Math.max(...x.samples.map((m) => m.arrayBuffersMb))),
      f0(Math.max(...x.samples.filter((m) => m.label.startsWith('ort ')).map((m) => m.rssMb - m.arrayBuffersMb))),
      f0(x.layerF32Mb),
      f0(x.lmHeadF32Mb),
    ],
  ];
  lines.push(table(head, body));
  lines.push(
    'MB = MiB; JS buffers: max ArrayBuffer memory (weights + garbage awaiting GC); other: max RSS − ArrayBuffers right after an ' +
      'onnxruntime run (Node, onnxruntime arena/activations, malloc fragmentation)',
  );
  return lines.join('\n');
}

/** Calibrate-vs-eval ratio and quantize timings per fixture. */
export function pipelineTable(rows: Array<PipelineResult | { fixture: string; error: string }>): string {
  const lines = ['fixture            eval s  calibrate s  ratio (target ≤ 2)  rtn s   gptq s  agq s   largest solve'];
  for (const r of rows) {
    if ('error' in r) {
      lines.push(`${r.fixture.padEnd(18)} error: ${r.error}`);
      continue;
    }
    const q = (m: string) => r.quantize.find((x) => x.method === m)!;
    const largest = q('agq').largestSolve;
    lines.push(
      `${r.fixture.padEnd(18)} ${r.evalSeconds.toFixed(2).padStart(6)}  ${r.calibrateSeconds.toFixed(2).padStart(11)}  ${r.calibrateRatio.toFixed(2).padStart(18)}  ` +
        `${q('rtn').seconds.toFixed(1).padStart(5)}  ${q('gptq').seconds.toFixed(1).padStart(6)}  ${q('agq').seconds.toFixed(1).padStart(5)}   ${largest.seconds.toFixed(3)} s (${largest.module})`,
    );
  }
  return lines.join('\n');
}

export function formatTable(rows: Array<FormatBenchResult | { fixture: string; error: string }>): string {
  const lines = ['fixture            format            write s  size MB  vs source'];
  for (const r of rows) {
    if ('error' in r) {
      lines.push(`${r.fixture.padEnd(18)} error: ${r.error}`);
      continue;
    }
    for (const f of r.formats)
      lines.push(`${r.fixture.padEnd(18)} ${f.format.padEnd(17)} ${f.seconds.toFixed(2).padStart(7)}  ${(f.bytes / 1e6).toFixed(2).padStart(7)}  ${(f.bytes / r.sourceBytes).toFixed(2).padStart(8)}×`);
  }
  return lines.join('\n');
}

export function ebssTable(rows: Array<EbssBenchResult | { fixture: string; error: string }>): string {
  const lines = ['fixture            wall s  tokens/s  step ms at 16 / 256 / 511  distinct 4-grams'];
  const ms = (x: number | null | undefined) => (x === null || x === undefined ? '—' : x.toFixed(1));
  for (const r of rows) {
    if ('error' in r) {
      lines.push(`${r.fixture.padEnd(18)} error: ${r.error}`);
      continue;
    }
    lines.push(
      `${r.fixture.padEnd(18)} ${r.seconds.toFixed(1).padStart(6)}  ${r.tokensPerSecond.toFixed(0).padStart(8)}  ` +
        `${`${ms(r.stepMs['16'])} / ${ms(r.stepMs['256'])} / ${ms(r.stepMs['511'])}`.padStart(25)}  ${r.distinct4gram.toFixed(3).padStart(16)}`,
    );
  }
  return lines.join('\n');
}

const secs = (xs: number[] | null | undefined) => (xs ? xs.map((x) => x.toFixed(1)).join(' / ') : '-');
const mb = (x: number) => `${(x / 1024).toFixed(1)} GB`;

/** The --real tables: GEMM peak, forward vs transformers eager, calibrate/quantize per layer vs the PyTorch reference. */
export function realTables(r: RealReport, machine: { cpus: number; cpuModel?: string; loadavg1mBefore: number; loadavg1mAfter: number }): string {
  const peak = ok(r.peakBefore) ? r.peakBefore.best : NaN;
  const peakLine = (p: RealReport['peakBefore'] | null, when: string) =>
    !p ? '' : ok(p) ? `GEMM peak ${when}: ${f1(p.best)} GFLOP/s best, ${f1(p.median)} median (${p.size}³ float32 MatMul, onnxruntime, ${p.threads} threads)` : `GEMM peak ${when}: ${p.error}`;
  const out = [peakLine(r.peakBefore, 'before'), peakLine(r.peakAfter, 'after'), `machine: ${machine.cpus} CPUs${machine.cpuModel ? ` (${machine.cpuModel})` : ''}, 1-min load ${machine.loadavg1mBefore.toFixed(1)} before, ${machine.loadavg1mAfter.toFixed(1)} after`, ''];

  const fwdHead = ['shape', 'tok/s', 'GFLOP/tok', 'GFLOP/s', 'of peak', 's/layer', 'peak RSS', 'ppl', 'transformers tok/s', '×', 'its RSS', 'its ppl'];
  const fwd = r.shapes.map((s) => {
    const f = s.forward;
    if (!ok(f)) return [s.shape, `error: ${f?.error ?? 'not run'}`];
    const gflop = f.flopsPerToken.total / 1e9;
    const rate = gflop * f.tokensPerSec;
    const t = s.torch;
    return [
      s.shape,
      f1(f.tokensPerSec),
      gflop.toFixed(3),
      f1(rate),
      pct(rate / peak),
      secs(f.layerSeconds),
      mb(f.peakRssMb),
      f.ppl.toFixed(1),
      ok(t) ? f1(t.warmTokensPerSec) : t ? `error: ${t.error}` : '-',
      ok(t) ? `${(f.tokensPerSec / t.warmTokensPerSec).toFixed(2)}×` : '-',
      ok(t) ? mb(t.peakRssMb) : '-',
      ok(t) ? t.ppl.toFixed(1) : '-',
    ];
  });
  const f0s = r.shapes.map((s) => s.forward).find(ok);
  // PyTorch's own GEMM peak beside onnxruntime's: which library multiplies faster on this CPU bounds the ratio.
  const tg = r.shapes.map((s) => s.torch).find((t) => ok(t) && t.gemmPeak !== undefined) as (TorchResult & { gemmPeak: { best: number; median: number } }) | undefined;
  if (tg) out.splice(2, 0, `PyTorch GEMM peak: ${f1(tg.gemmPeak.best)} GFLOP/s best, ${f1(tg.gemmPeak.median)} median (the same MatMul, torch ${tg.torch}, ${tg.threads} threads; ${(tg.gemmPeak.best / peak).toFixed(2)}× onnxruntime's)`);
  out.push(`Forward (eval path, head 'nll', float32 on CPU): ${f0s ? `${f0s.windows} × ${f0s.seqLen} tokens` : ''}, the checkpoint read once beforehand (page cache); transformers eager (float32, same windows and batches, first run timed, loading not)`);
  out.push(table(fwdHead, fwd), '');

  const qHead = ['shape', 'calibrate s/layer', 'its RSS', 'MaxVio nat → used (2nd half)', 'quantize s/layer', 'its RSS', 'one-pass s/layer', 'reference s/layer', 'its RSS', 'default / ref', 'one-pass / ref'];
  const q = r.shapes.map((s) => {
    const c = s.calibrate;
    const qs = s.quantize;
    const q1 = s.quantizeOnePass;
    const ref = s.reference;
    const sum = (x: number[] | null | undefined) => (x ? x.reduce((a, b) => a + b, 0) : NaN);
    return [
      s.shape,
      ok(c) ? secs(c.layerSeconds) : c ? `error: ${c.error}` : '-',
      ok(c) ? mb(c.peakRssMb) : '-',
      ok(c) ? `${c.maxvio.naturalSecondHalf.toFixed(2)} → ${c.maxvio.usedSecondHalf.toFixed(2)}` : '-',
      ok(qs) ? secs(qs.layerSeconds) : qs ? `error: ${qs.error}` : '-',
      ok(qs) ? mb(qs.peakRssMb) : '-',
      ok(q1) ? secs(q1.layerSeconds) : q1 ? `error: ${q1.error}` : '-',
      ok(ref) ? secs(ref.layerSeconds) : ref ? `error: ${ref.error}` : '-',
      ok(ref) ? mb(ref.peakRssMb) : '-',
      ok(qs) && ok(ref) ? `${(sum(qs.layerSeconds) / sum(ref.layerSeconds)).toFixed(2)}×` : '-',
      ok(q1) && ok(ref) ? `${(sum(q1.layerSeconds) / sum(ref.layerSeconds)).toFixed(2)}×` : '-',
    ];
  });
  const c0 = r.shapes.map((s) => s.calibrate).find(ok);
  out.push(
    `Calibrate (${c0 ? `${c0.tokens / 512} × 512 C4 tokens, ` : ''}default loss-free bias) and quantize (AGQ 4-bit, group 128) seconds per decoder layer; ` +
      'one-pass: --no-true-sequential, the protocol of the PyTorch reference pipeline (float32 Hessians, same windows)',
  );
  out.push(table(qHead, q), '');

  const hours = (sec: number | null) => (sec === null ? '-' : sec < 3600 ? `${(sec / 60).toFixed(0)} min` : `${(sec / 3600).toFixed(1)} h`);
  const gb = (x: number | null) => (x === null ? '-' : `${x.toFixed(1)} GB`);
  const whole = r.shapes.map(wholeModel).filter((w): w is WholeModel => w !== null);
  out.push(
    'EXTRAPOLATED to the whole models (not measured): per-layer seconds × layers (+ the output head at the real vocabulary for the forward), ' +
      'the same tokens as above; memory = the measured peak (+ lm_head in float32 for the forward); checkpoint reads from disk not included',
  );
  out.push(
    table(
      ['model', 'layers', 'forward (same tokens)', 'its GB', 'calibrate', 'its GB', 'quantize', 'its GB', 'reference quantize', 'default / ref', 'one-pass / ref'],
      whole.map((w) => {
        const ratio = (a: number | null) => (a !== null && w.referenceQuantizeSeconds ? `${(a / w.referenceQuantizeSeconds).toFixed(2)}×` : '-');
        return [w.model, String(w.layers), hours(w.forwardSeconds), gb(w.forwardGB), hours(w.calibrateSeconds), gb(w.calibrateGB), hours(w.quantizeSeconds), gb(w.quantizeGB), hours(w.referenceQuantizeSeconds), ratio(w.quantizeSeconds), ratio(w.onePassQuantizeSeconds)];
      }),
    ),
  );
  return out.filter((l, i) => l !== '' || i > 2).join('\n');
}
