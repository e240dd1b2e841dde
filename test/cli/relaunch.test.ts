import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MMAP_THRESHOLD, needsRelaunch } from '../../src/cli/relaunch.js';

describe('relaunch with a fixed glibc mmap threshold', () => {
  it('only on Linux, and only when the threshold is not set already', () => {
    expect(needsRelaunch({}, 'linux')).toBe(true);
    expect(needsRelaunch({ MALLOC_MMAP_THRESHOLD_: '65536' }, 'linux')).toBe(false);
    expect(needsRelaunch({}, 'darwin')).toBe(false);
    expect(needsRelaunch({}, 'win32')).toBe(false);
  });

  it('runs the script in a child with the threshold set, the same arguments, and exits with its code', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relaunch-'));
    try {
      const script = path.join(dir, 'child.mjs');
      const relaunch = path.resolve(__dirname, '../../dist/cli/relaunch.js');
      fs.writeFileSync(
        script,
        `import { needsRelaunch, relaunch } from ${JSON.stringify(relaunch)};\n` +
          `import { fileURLToPath } from 'node:url';\n` +
          `if (needsRelaunch(process.env, 'linux')) process.exitCode = await relaunch(fileURLToPath(import.meta.url), process.argv.slice(2));\n` +
          `else { console.log(JSON.stringify({ env: process.env.MALLOC_MMAP_THRESHOLD_, args: process.argv.slice(2) })); process.exitCode = 3; }\n`,
      );
      const env = { ...process.env };
      delete env['MALLOC_MMAP_THRESHOLD_'];
      const r = spawnSync(process.execPath, [script, 'quantize', '--json'], { env, encoding: 'utf8' });
      expect(r.status).toBe(3);
      expect(JSON.parse(r.stdout)).toEqual({ env: String(MMAP_THRESHOLD), args: ['quantize', '--json'] });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
