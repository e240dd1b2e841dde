#!/usr/bin/env node
// Assemble the *.wat (text) of src/quantization/wasm and src/formats/gguf/wasm into <name>-wasm.ts modules holding
// the binary as base64, so the package ships no build step for it. `--check`: exit 1 if a committed module differs from its source.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIRS = ['src/quantization/wasm', 'src/formats/gguf/wasm'].map((d) => path.join(root, d));
const check = process.argv.includes('--check');
const wabt = await wabtInit();
let stale = 0;
for (const [dir, f] of DIRS.flatMap((dir) => fs.readdirSync(dir).filter((f) => f.endsWith('.wat')).sort().map((f) => [dir, f]))) {
  const mod = wabt.parseWat(f, fs.readFileSync(path.join(dir, f), 'utf8'), { simd: true });
  mod.validate();
  const { buffer } = mod.toBinary({});
  mod.destroy();
  const name = f.replace(/\.wat$/, '');
  const out = path.join(dir, `${name}-wasm.ts`);
  const text = `// Generated from ${f} by scripts/build-wasm.mjs; do not edit.\nexport const ${name.toUpperCase()}_WASM = '${Buffer.from(buffer).toString('base64')}';\n`;
  if (check) {
    if (!fs.existsSync(out) || fs.readFileSync(out, 'utf8') !== text) {
      console.error(`${path.relative(process.cwd(), out)} is stale: run node scripts/build-wasm.mjs`);
      stale++;
    }
  } else fs.writeFileSync(out, text);
}
process.exit(stale ? 1 : 0);
