/**
 * Typed, validating access to a parsed config.json. Every problem becomes a one-line BAD_CONFIG error that names the
 * key, so a bad checkpoint fails in `inspect` before any long run.
 */
import { fail } from '../errors.js';

export type RawConfig = Record<string, unknown>;

export class ConfigReader {
  constructor(
    readonly raw: RawConfig,
    readonly source: string,
  ) {}

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  private bad(key: string, what: string): never {
    throw fail('BAD_CONFIG', `${this.source}: "${key}" ${what} (got ${JSON.stringify(this.raw[key])})`);
  }

  /** A positive (or non-negative with `min: 0`) integer. */
  int(key: string, fallback?: number, min = 1): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.bad(key, 'is required');
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) this.bad(key, `must be an integer ≥ ${min}`);
    return v;
  }

  intOrNull(key: string): number | null {
    return this.has(key) ? this.int(key) : null;
  }

  num(key: string, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.bad(key, 'is required');
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, 'must be a finite number');
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.bad(key, 'must be true or false');
    return v;
  }

  str(key: string, fallback: string): string {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'string') this.bad(key, 'must be a string');
    return v;
  }

  intList(key: string): number[] {
    const v = this.raw[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x))) this.bad(key, 'must be a list of integers');
    return v as number[];
  }

  object(key: string): Record<string, unknown> | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) this.bad(key, 'must be an object');
    return v as Record<string, unknown>;
  }

  /** Require `value` to be one of `allowed`. */
  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const v = this.str(key, fallback);
    if (!allowed.includes(v as T)) this.bad(key, `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}`);
    return v as T;
  }
}
