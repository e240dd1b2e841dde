/**
 * Every failure the user can cause (bad files, bad options, bad data) is a MoeQuantError: the CLI prints its
 * one-line message and exits with code 2, without a stack trace (the stack only with --debug).
 * Anything else escaping is a bug in moe-quant.
 */

/** Machine-readable category of a user-facing error. */
export type ErrorCode =
  | 'BAD_CHECKPOINT' // safetensors header/data invalid, missing shard or tensor, shape contradicts config
  | 'BAD_CONFIG' // config.json missing, unreadable, or inconsistent
  | 'UNSUPPORTED' // architecture or option we do not implement
  | 'BAD_DATA' // data file missing, empty, too short
  | 'BAD_OPTION' // CLI/API option out of range or unknown value
  | 'NUMERIC' // NaN/Inf where finite numbers are required
  | 'DEVICE' // requested execution provider unavailable
  | 'IO' // cannot write output
  | 'BUSY'; // another run is writing the same output

export class MoeQuantError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MoeQuantError';
    this.code = code;
  }
}

/** Shorthand used across the code base: `throw fail('BAD_DATA', 'data file x is empty')`. */
export function fail(code: ErrorCode, message: string, cause?: unknown): MoeQuantError {
  return new MoeQuantError(code, message, cause === undefined ? undefined : { cause });
}
