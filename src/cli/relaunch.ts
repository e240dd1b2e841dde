/**
 * The CLI runs itself once more with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_, read by glibc only when
 * a process starts). By default glibc raises that threshold each time a large block is freed (up to 32 MiB); after
 * that, onnxruntime's per-run buffers (quantize runs without its arena) come from heaps that fragment and are not
 * given back, and the native heap of a real-shape quantize grew by ~0.3 GiB per layer (README "Memory"). With a
 * fixed threshold every block above it is its own mapping, returned to the system when freed.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';

/** Blocks of at least this many bytes are mapped on their own (glibc starts at 128 KiB and raises it up to 32 MiB). */
export const MMAP_THRESHOLD = 256 * 1024;

/** Whether this process should run the CLI in a child with the threshold set: Linux, and not set already. */
export function needsRelaunch(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): boolean {
  return platform === 'linux' && env['MALLOC_MMAP_THRESHOLD_'] === undefined;
}

/**
 * Run `script` with `args` in a child Node process with the threshold set, the same stdio and Node flags; signals
 * sent to this process go on to the child (which removes its partial output). Resolves with the exit code to
 * leave with (128 + signal number when the child was killed by a signal).
 */
export function relaunch(script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, script, ...args], {
    stdio: 'inherit',
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: String(MMAP_THRESHOLD) },
  });
  const forward = (signal: NodeJS.Signals) => () => {
    child.kill(signal);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward(signal));
  return new Promise((resolve) => {
    child.on('error', (e) => {
      process.stderr.write(`moe-quant: could not start ${process.execPath}: ${e.message}\n`);
      resolve(1);
    });
    child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0)));
  });
}
