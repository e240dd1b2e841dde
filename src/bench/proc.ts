/** Child-process plumbing shared by the benchmark driver and its workers. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Workers print exactly one line starting with this marker, followed by their JSON result. */
export const RESULT_MARKER = '@@BENCH_RESULT ';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
/** Repository root (dist/bench/ → ../..). */
export const REPO_ROOT = path.resolve(BENCH_DIR, '..', '..');

/** Peak resident set size of this process so far, in MB. */
export function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/** Print a worker's result on stdout for the parent. */
export function emit(result: unknown): void {
  process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
}

export interface ChildResult<T> {
  result: T | null;
  code: number | null;
  stderr: string;
  stdout: string;
}

/** Run `cmd args`, pass stderr through when `echo`, and parse the marked JSON line of stdout. */
export function runChild<T>(cmd: string, args: string[], opts: { echo?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<ChildResult<T>> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (opts.echo) process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith(RESULT_MARKER));
      let result: T | null = null;
      if (line) {
        try {
          result = JSON.parse(line.slice(RESULT_MARKER.length)) as T;
        } catch {
          result = null;
        }
      }
      resolve({ result, code, stderr, stdout });
    });
  });
}

/**
 * The variables bin/moe-quant's shebang (`#!/usr/bin/env -S NAME=value … node`) starts Node with — glibc's fixed
 * mmap threshold — read from the launcher itself, so workers run as the CLI does and the value lives in one place.
 */
export function launcherEnv(): Record<string, string> {
  const shebang = fs.readFileSync(path.join(REPO_ROOT, 'bin', 'moe-quant'), 'utf8').split('\n')[0]!;
  const m = /^#!\/usr\/bin\/env -S ((?:\w+=\S+ )*)node$/.exec(shebang);
  if (!m) throw new Error(`bin/moe-quant: unexpected first line ${JSON.stringify(shebang)}`);
  const pairs = m[1]!.trim().split(/\s+/).filter(Boolean);
  return Object.fromEntries(pairs.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

/** Run a compiled worker of this folder in a fresh Node process (so its peak RSS is its own). */
export function runNodeWorker<T>(worker: string, args: string[], execArgv: string[] = [], echo = true): Promise<ChildResult<T>> {
  // As the CLI runs (the caller's own setting wins).
  const env = { ...launcherEnv(), ...process.env };
  return runChild<T>(process.execPath, [...execArgv, path.join(BENCH_DIR, worker), ...args], { echo, env });
}

/** Last few lines of a child's stderr, for error messages. */
export function tail(text: string, lines = 8): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}
