/**
 * A dependency-free progress bar on stderr. On a terminal it redraws one line; otherwise it prints a line at each
 * quarter so logs stay short. onnxruntime's run() blocks the event loop, so callers tick it between runs.
 */
export class ProgressBar {
  private readonly start = performance.now();
  private lastDraw = 0;
  private lastQuarter = -1;
  private readonly tty = Boolean(process.stderr.isTTY);

  constructor(
    private readonly label: string,
    private readonly enabled = true,
  ) {}

  /** `detail`: a short extra shown after the counts (e.g. tokens/s). */
  update(done: number, total: number, detail?: string): void {
    if (!this.enabled || total <= 0) return;
    const frac = Math.min(1, done / total);
    const elapsed = (performance.now() - this.start) / 1000;
    const eta = done > 0 ? (elapsed / done) * (total - done) : 0;
    if (this.tty) {
      const now = performance.now();
      if (done < total && now - this.lastDraw < 100) return;
      this.lastDraw = now;
      const width = 28;
      const filled = Math.round(frac * width);
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      const count = Number.isInteger(done) ? `${done}/${total}` : '';
      process.stderr.write(`\r${this.label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${count}${detail ? ` ${detail}` : ''} ${fmt(elapsed)} elapsed, eta ${fmt(eta)}\x1b[K`);
      if (done >= total) process.stderr.write('\n');
    } else {
      const quarter = Math.floor(frac * 4);
      if (quarter === this.lastQuarter) return;
      this.lastQuarter = quarter;
      process.stderr.write(`${this.label}: ${(frac * 100).toFixed(0)}% (${Number.isInteger(done) ? `${done}/${total}, ` : ''}${detail ? `${detail}, ` : ''}${fmt(elapsed)})\n`);
    }
  }

  /** A callback suitable for the library's onProgress options. */
  get callback(): (done: number, total: number) => void {
    return (d, t) => this.update(d, t);
  }
}

function fmt(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  return `${m}m${Math.round(seconds - m * 60)
    .toString()
    .padStart(2, '0')}s`;
}
