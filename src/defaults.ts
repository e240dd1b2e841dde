/** Paths of what the package bundles, so commands run with no arguments. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Package root (works from src/ under vitest and from dist/ when installed). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The bundled tiny model (tiny-deepseek-v3, trained; see models/README.md). */
export const DEFAULT_MODEL_DIR = path.join(PACKAGE_ROOT, 'models', 'tiny-deepseek-v3');

/** Bundled held-out text for eval (WikiText-2 test, CC BY-SA 3.0; see calib-data/README.md). */
export const DEFAULT_EVAL_DATA = path.join(PACKAGE_ROOT, 'calib-data', 'wikitext-2-test.raw');

/** Bundled calibration text (C4 slice, ODC-BY; see calib-data/README.md). */
export const DEFAULT_CALIB_DATA = path.join(PACKAGE_ROOT, 'calib-data', 'c4-en-train-first1000.jsonl');
