/**
 * The main thread's side of a worker thread that answers one request at a time (parallel evaluation engines,
 * parallel GPTQ solves). A worker's error, or its exit, rejects the request in flight; an `error` reply becomes the
 * MoeQuantError it was in the worker (same code), so callers report it as if it had happened here.
 */
import type { Worker } from 'node:worker_threads';
import { fail, MoeQuantError, type ErrorCode } from './errors.js';

/** What a worker sends back when a request failed. */
export type ErrorReply = { type: 'error'; code: ErrorCode | null; message: string; stack?: string };

export class WorkerClient<Request, Reply extends { type: string }> {
  private pending: { resolve(reply: Reply): void; reject(e: Error): void; interim?: (reply: Reply) => void } | null = null;
  private exited = false;

  /** `label` prefixes errors without a code; replies of the `interim` types (progress) do not end a request. */
  constructor(
    private readonly worker: Worker,
    private readonly label: string,
    private readonly interimTypes: readonly string[] = [],
  ) {
    worker.on('message', (m: Reply | ErrorReply) => {
      const p = this.pending;
      if (!p) return;
      if (this.interimTypes.includes(m.type)) return p.interim?.(m as Reply);
      this.pending = null;
      if (m.type === 'error') p.reject(errorOf(m as ErrorReply, label));
      else p.resolve(m as Reply);
    });
    worker.on('error', (e) => this.abort(e instanceof Error ? e : new Error(String(e))));
    worker.on('exit', (code) => {
      this.exited = true;
      this.abort(new Error(`${label} exited (code ${code})`));
    });
  }

  private abort(e: Error): void {
    const p = this.pending;
    this.pending = null;
    p?.reject(e);
  }

  /** Send `request` (if any) and wait for the reply that ends it; `interim` receives the replies in between. */
  next(request?: Request, interim?: (reply: Reply) => void, transfer: ArrayBuffer[] = []): Promise<Reply> {
    if (this.exited) return Promise.reject(new Error(`${this.label} has exited`));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject, interim };
      if (request !== undefined) this.worker.postMessage(request, transfer);
    });
  }

  /**
   * Send `closing` and wait for the worker to exit (a busy one finishes or stops at its next check: terminating a
   * thread inside an onnxruntime run aborts the whole process). Terminated only if it hangs for 10 s.
   */
  async close(closing: Request): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage(closing);
    const timer = setTimeout(() => void this.worker.terminate(), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

function errorOf(m: ErrorReply, label: string): Error {
  if (m.code) return fail(m.code, m.message);
  const e = new Error(`${label}: ${m.message}`);
  if (m.stack) e.stack = m.stack;
  return e;
}

/** A worker's reply for a failed request (see WorkerClient). */
export function errorReply(e: unknown): ErrorReply {
  if (e instanceof MoeQuantError) return { type: 'error', code: e.code, message: e.message };
  if (e instanceof Error) return { type: 'error', code: null, message: e.message, ...(e.stack ? { stack: e.stack } : {}) };
  return { type: 'error', code: null, message: String(e) };
}
