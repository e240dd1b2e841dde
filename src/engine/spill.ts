/**
 * A scratch file of float32 arrays: quantize writes a layer's dequantized experts here instead of holding them all
 * (at real sizes a layer's experts in float32 are several GB) and the weight store reads each back when a pass
 * needs it; the calibration activations go to such files too when the budget says so (activations.ts). Raw bytes,
 * so what comes back is bit for bit what went in.
 */
import fs from 'node:fs';

/** Bytes per read or write call (Node refuses more than 2 GiB in one). */
const IO_MAX = 2 ** 30;

export class SpillFile {
  private fd: number | null;
  private size = 0;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'w+');
  }

  /** Append `data`; returns a reader that fills a buffer of data's length with it. */
  write(data: Float32Array): (into: Float32Array) => Float32Array {
    const offset = this.size;
    const bytes = data.byteLength;
    this.writeAt(offset, data);
    return (into) => {
      if (into.byteLength !== bytes) throw new Error(`SpillFile: ${bytes} bytes read into ${into.byteLength}`);
      return this.readAt(offset, into);
    };
  }

  /** Write `data` at byte `offset` (over what is there, or past the end). */
  writeAt(offset: number, data: Float32Array): void {
    const bytes = data.byteLength;
    const src = Buffer.from(data.buffer, data.byteOffset, bytes);
    for (let w = 0; w < bytes; ) w += fs.writeSync(this.fd!, src, w, Math.min(bytes - w, IO_MAX), offset + w);
    this.size = Math.max(this.size, offset + bytes);
  }

  /** Fill `into` with the bytes at `offset`. */
  readAt(offset: number, into: Float32Array): Float32Array {
    const bytes = into.byteLength;
    const dst = Buffer.from(into.buffer, into.byteOffset, bytes);
    for (let r = 0; r < bytes; ) {
      const n = fs.readSync(this.fd!, dst, r, Math.min(bytes - r, IO_MAX), offset + r);
      if (n === 0) throw new Error(`SpillFile: ${this.file} ended early`);
      r += n;
    }
    return into;
  }

  /** Forget everything written (readers from before must not be used again). */
  reset(): void {
    fs.ftruncateSync(this.fd!, 0);
    this.size = 0;
  }

  close(): void {
    if (this.fd === null) return;
    fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(this.file, { force: true });
  }
}
