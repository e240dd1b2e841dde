import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { launcherEnv } from '../../src/bench/proc.js';
import { BIN, ROOT } from './spawn.js';

describe('bin/moe-quant run as an executable (npx, node_modules/.bin)', () => {
  // /proc/PID/environ is Linux's; the variable only matters to glibc.
  it.skipIf(process.platform !== 'linux')("starts Node itself, in one process, with glibc's mmap threshold fixed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'launcher-'));
    try {
      const env = { ...process.env };
      delete env['MALLOC_MMAP_THRESHOLD_'];
      const child = spawn(BIN, ['calibrate', '--out', path.join(dir, 'out'), '--samples', '512', '--seq-len', '256', '--device', 'cpu'], { cwd: ROOT, env });
      const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      // The spawned pid is Node itself (env replaced itself by node): its command line is the CLI's.
      // Wait until the run has started (its temporary output exists, its signal handlers are installed).
      for (let i = 0; i < 1200 && !fs.readdirSync(dir).some((f) => f.startsWith('out.tmp-')); i++) await new Promise((r) => setTimeout(r, 25));
      expect(fs.readdirSync(dir)).toContain(`out.tmp-${child.pid}`);
      expect(fs.readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0')[0]).toMatch(/node$/);
      const threshold = launcherEnv()['MALLOC_MMAP_THRESHOLD_'];
      expect(threshold).toMatch(/^\d+$/);
      expect(fs.readFileSync(`/proc/${child.pid}/environ`, 'utf8').split('\0')).toContain(`MALLOC_MMAP_THRESHOLD_=${threshold}`);
      child.kill('SIGTERM');
      expect(await done).toBe(143);
      expect(fs.readdirSync(dir)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
