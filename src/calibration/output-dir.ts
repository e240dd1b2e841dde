/**
 * Output directories are built under a temporary name next to the target and renamed into place when complete,
 * so a failed or interrupted run never leaves a half-written result, and the input model is never written to.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fail } from '../errors.js';

/**
 * Check that `out` may be (re)written: an existing `out` is replaced only if it is empty, holds `marker` (our own
 * earlier output), or `force` is set; never the model directory or a parent of it. Cheap: call before long work.
 */
export function checkOutputDir(out: string, opts: { force?: boolean; model: string; marker: string }): void {
  const target = path.resolve(out);
  const model = path.resolve(opts.model);
  if (target === model || model.startsWith(target + path.sep))
    throw fail('BAD_OPTION', `output directory ${out} would overwrite the input model ${opts.model}; choose another --out`);
  if (fs.existsSync(target)) {
    if (!fs.statSync(target).isDirectory()) throw fail('BAD_OPTION', `output ${out} exists and is not a directory`);
    const entries = fs.readdirSync(target);
    if (entries.length > 0 && !entries.includes(opts.marker) && !opts.force)
      throw fail('BAD_OPTION', `output directory ${out} exists and is not a moe-quant output (no ${opts.marker}); use --force to replace it`);
  }
}

/** Build an output directory: `fill(tmpDir)` writes everything, then it is renamed to `out`; on error nothing stays. */
export async function writeOutputDir(out: string, fill: (tmp: string) => Promise<void> | void): Promise<string> {
  const target = path.resolve(out);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = `${target}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  if (fs.existsSync(target)) {
    const old = `${target}.old-${process.pid}`;
    fs.renameSync(target, old);
    fs.renameSync(tmp, target);
    fs.rmSync(old, { recursive: true, force: true });
  } else {
    fs.renameSync(tmp, target);
  }
  return target;
}
