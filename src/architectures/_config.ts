/**
 * Typed, validating access to a parsed config.json. Every problem becomes a one-line BAD_CONFIG error that names the
 * key as the file spells it, so a bad checkpoint fails in `inspect` before any long run.
 */
import { fail } from '../errors.js';

export type RawConfig = Record<string, unknown>;

/**
 * Other spellings of a key that transformers' config class accepts (its `attribute_map`), by the key moe-quant
 * reads: `{ num_experts: ['num_local_experts'] }`.
 */
export type ConfigAliases = Readonly<Record<string, readonly string[]>>;

export class ConfigReader {
  /** Key moe-quant reads → the spelling present in the file, for keys that have aliases. */
  private readonly spelled = new Map<string, string>();

  constructor(
    readonly raw: RawConfig,
    readonly source: string,
    aliases: ConfigAliases = {},
  ) {
    for (const [key, others] of Object.entries(aliases)) {
      const present = [key, ...others].filter((k) => raw[k] !== undefined && raw[k] !== null);
      const [first, ...rest] = present;
      if (first === undefined) continue;
      // transformers silently lets the alias win; two different values are a contradiction in the file.
      const other = rest.find((k) => JSON.stringify(raw[k]) !== JSON.stringify(raw[first]));
      if (other !== undefined)
        throw fail(
          'BAD_CONFIG',
          `${source}: "${first}" (${JSON.stringify(raw[first])}) and "${other}" (${JSON.stringify(raw[other])}) are two spellings of one setting and disagree`,
        );
      this.spelled.set(key, first);
    }
  }

  /** How the file spells `key` (an alias, when the file uses one). */
  name(key: string): string {
    return this.spelled.get(key) ?? key;
  }

  private value(key: string): unknown {
    return this.raw[this.name(key)];
  }

  has(key: string): boolean {
    const v = this.value(key);
    return v !== undefined && v !== null;
  }

  /** Fail with `"<key as spelled>" <what> (got <value>)`; `got` replaces the value (e.g. for a default). */
  reject(key: string, what: string, got: string = JSON.stringify(this.value(key))): never {
    throw fail('BAD_CONFIG', `${this.source}: "${this.name(key)}" ${what} (got ${got})`);
  }

  /** A positive (or non-negative with `min: 0`) integer. */
  int(key: string, fallback?: number, min = 1): number {
    const v = this.value(key);
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.reject(key, 'is required');
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) this.reject(key, `must be an integer ≥ ${min}`);
    return v;
  }

  intOrNull(key: string): number | null {
    return this.has(key) ? this.int(key) : null;
  }

  num(key: string, fallback?: number): number {
    const v = this.value(key);
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.reject(key, 'is required');
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.reject(key, 'must be a finite number');
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.value(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.reject(key, 'must be true or false');
    return v;
  }

  str(key: string, fallback: string): string {
    const v = this.value(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'string') this.reject(key, 'must be a string');
    return v;
  }

  intList(key: string): number[] {
    const v = this.value(key);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x))) this.reject(key, 'must be a list of integers');
    return v as number[];
  }

  object(key: string): Record<string, unknown> | null {
    const v = this.value(key);
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) this.reject(key, 'must be an object');
    return v as Record<string, unknown>;
  }

  /** Require `value` to be one of `allowed`. */
  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const v = this.str(key, fallback);
    if (!allowed.includes(v as T)) this.reject(key, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}`);
    return v as T;
  }
}
