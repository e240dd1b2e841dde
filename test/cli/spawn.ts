/** Running the built CLI (dist/, made by `npm test`'s build step) as a child process, optionally as an unprivileged user. */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '../..');
export const BIN = path.join(ROOT, 'bin/moe-quant');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const result = (r: SpawnSyncReturns<string>): CliResult => ({ code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr });

export function cli(args: string[], opts: { cwd?: string; prefix?: string[] } = {}): CliResult {
  const [cmd, ...rest] = [...(opts.prefix ?? []), process.execPath, BIN, ...args];
  return result(spawnSync(cmd!, rest, { cwd: opts.cwd ?? ROOT, encoding: 'utf8' }));
}

/** Start the CLI in the background; `done` resolves when it exits. */
export function cliAsync(args: string[], opts: { cwd?: string } = {}) {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += String(d)));
  child.stderr.on('data', (d) => (stderr += String(d)));
  const done = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

/** Poll until `cond()` holds (or fail after `ms`). */
export async function waitFor(cond: () => boolean, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * How to run a command as a user without root's power to write anywhere: directly when we are not root, through
 * `setpriv` as nobody when we are (CI runs as root). null with the reason when neither is possible.
 */
export function unprivileged(): { prefix: string[]; reason: null } | { prefix: null; reason: string } {
  if (process.getuid?.() !== 0) return { prefix: [], reason: null };
  const found = spawnSync('setpriv', ['--version'], { encoding: 'utf8' });
  if (found.status !== 0) return { prefix: null, reason: 'running as root and setpriv (util-linux) is not installed, so no unprivileged user can be used' };
  return { prefix: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'], reason: null };
}

/** A directory that an unprivileged user (see unprivileged()) may enter and read. */
export function readableByAll(dir: string): string {
  fs.chmodSync(dir, 0o755);
  return dir;
}
