/** Where the tests find the read-only shared fixtures and data (not a test file itself). */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** ../shared next to the repository. */
export const SHARED_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');

/** The trained fixtures (../shared/fixtures), or $MOE_QUANT_FIXTURES. */
export const FIXTURES = process.env.MOE_QUANT_FIXTURES ?? path.join(SHARED_DIR, 'fixtures');

/** WikiText-2 test split and the C4 slice. */
export const WIKI = path.join(SHARED_DIR, 'data/wikitext-2-raw/wiki.test.raw');
export const C4 = path.join(SHARED_DIR, 'data/c4/c4-en-train.00000-of-01024.first1000.jsonl');
