/**
 * A scratch file of float32 arrays: quantize writes a layer's dequantized experts here instead of holding them all
 * (at real sizes a layer's experts in float32 are several GB) and the weight store reads each back when a pass
 * needs it. Raw bytes, so what comes back is bit for bit what went in. Reset after each layer.
 */
import fs from 'node:fs';

export class SpillFile {
  private fd: number | null;
  private size = 0;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'w+');
  }

  /** Append `data`; returns a reader that fills a buffer of data's length with it. */
  write(data: Float32Array): (into: Float32Array) => Float32Array {
    const fd = this.fd!;
    const offset = this.size;
    const bytes = data.byteLength;
    const src = Buffer.from(data.buffer, data.byteOffset, bytes);
    for (let w = 0; w < bytes; ) w += fs.writeSync(fd, src, w, bytes - w, offset + w);
    this.size += bytes;
    return (into) => {
      if (into.byteLength !== bytes) throw new Error(`SpillFile: ${bytes} bytes read into ${into.byteLength}`);
      const dst = Buffer.from(into.buffer, into.byteOffset, bytes);
      for (let r = 0; r < bytes; ) {
        const n = fs.readSync(fd, dst, r, bytes - r, offset + r);
        if (n === 0) throw new Error(`SpillFile: ${this.file} ended early`);
        r += n;
      }
      return into;
    };
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
