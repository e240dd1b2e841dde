/** Option parsers shared by the commands. */
import { InvalidArgumentError, Option } from 'commander';
import { DEVICES } from '../graph/session.js';

/** Parse a positive integer option. */
export function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer.`);
    return n;
  };
}

/** Parse a non-negative integer option. */
export function nonNegativeInt(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer.`);
    return n;
  };
}

/** Parse a positive number option. */
export function positiveNumber(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number.`);
    return n;
  };
}

export const deviceOption = () =>
  new Option('--device <device>', 'execution provider: auto tries cuda, then webgpu, then cpu').choices(DEVICES as string[]).default('auto');

