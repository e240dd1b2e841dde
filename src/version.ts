/** Versions recorded in outputs so a run can be reproduced. */
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from './defaults.js';

function packageVersion(dir: string): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export function versions(): Record<string, string> {
  return {
    'moe-quant': packageVersion(PACKAGE_ROOT),
    'onnxruntime-node': packageVersion(path.join(PACKAGE_ROOT, 'node_modules', 'onnxruntime-node')),
  };
}
