import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

describe('WebAssembly kernels', () => {
  it('the committed modules are assembled from their .wat sources (scripts/build-wasm.mjs --check)', () => {
    const root = path.resolve(import.meta.dirname, '../..');
    // Throws (non-zero exit) naming the stale module.
    expect(() => execFileSync(process.execPath, [path.join(root, 'scripts/build-wasm.mjs'), '--check'], { cwd: root, stdio: 'pipe' })).not.toThrow();
  });
});
