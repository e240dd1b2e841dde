/**
 * Minimal headless-Chromium driver for tests, with no npm dependency: the DevTools protocol over
 * --remote-debugging-pipe (the browser reads commands from fd 3 and writes replies and events to fd 4, each message
 * a JSON text ended by a NUL byte).
 *
 * Per page it records, from before navigation on:
 * - console calls (Runtime.consoleAPICalled), with their level;
 * - uncaught exceptions (Runtime.exceptionThrown);
 * - browser log entries (Log.entryAdded: failed loads, CSP and other violations);
 * - every network request the page makes (Network.requestWillBeSent), the page's own file URL excluded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];

/** The Chromium binary: $CHROMIUM_PATH if set, else the first of the usual Debian/Ubuntu paths that exists. */
export function findChromium(): string | undefined {
  const env = process.env['CHROMIUM_PATH'];
  if (env) return fs.existsSync(env) ? env : undefined;
  return CANDIDATES.find((p) => fs.existsSync(p));
}

export interface PageReport {
  /** Every console call, as "level: text". */
  console: string[];
  /** Console errors/asserts, uncaught exceptions and error-level browser log entries. */
  errors: string[];
  /** URLs of requests other than the page itself. */
  requests: string[];
  /** Results of the expressions passed to open(), in order (returnByValue). */
  values: unknown[];
}

interface Message {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
  sessionId?: string;
}

export class Chromium {
  private readonly child: ChildProcess;
  private readonly out: Writable;
  private readonly profile: string;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private readonly listeners = new Set<(m: Message) => void>();
  private stderr = '';
  private exited = false;

  private constructor(bin: string) {
    this.profile = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-chromium-'));
    this.child = spawn(
      bin,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-extensions',
        '--no-first-run',
        '--no-default-browser-check',
        '--mute-audio',
        '--hide-scrollbars',
        // Nothing may leave the machine even if a page asked for it; the request is still recorded.
        '--host-resolver-rules=MAP * ~NOTFOUND',
        `--user-data-dir=${this.profile}`,
        '--remote-debugging-pipe',
        'about:blank',
      ],
      { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
    );
    this.out = this.child.stdio[3] as Writable;
    const input = this.child.stdio[4] as Readable;
    (this.child.stderr as Readable).on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.out.on('error', () => {}); // reported through the exit handler
    let buf = Buffer.alloc(0);
    input.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let nul = buf.indexOf(0); nul >= 0; nul = buf.indexOf(0)) {
        const msg = JSON.parse(buf.subarray(0, nul).toString('utf8')) as Message;
        buf = buf.subarray(nul + 1);
        this.dispatch(msg);
      }
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      const err = new Error(`chromium exited (${code ?? signal}): ${this.stderr.trim().split('\n').slice(-5).join('\n')}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  static async launch(bin: string): Promise<Chromium> {
    const c = new Chromium(bin);
    await c.send('Browser.getVersion');
    return c;
  }

  private dispatch(msg: Message): void {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`CDP error: ${msg.error.message}`));
      else p.resolve(msg.result ?? {});
      return;
    }
    for (const l of this.listeners) l(msg);
  }

  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    if (this.exited) return Promise.reject(new Error(`chromium is not running: ${this.stderr.slice(-500)}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.out.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  }

  /**
   * Load `file` in a fresh tab of the given viewport, wait for the load event, then evaluate `expressions`
   * (returnByValue). With `screenshot`, also save a PNG of the page (or of `clip`) there.
   */
  async open(
    file: string,
    opts: {
      width?: number;
      height?: number;
      expressions?: string[];
      screenshot?: string;
      /** Part of the page to capture (CSS px); default the whole page. */
      clip?: { x?: number; y?: number; width?: number; height?: number };
      timeoutMs?: number;
    } = {},
  ): Promise<PageReport> {
    const url = pathToFileURL(file).href;
    const report: PageReport = { console: [], errors: [], requests: [], values: [] };
    const { targetId } = (await this.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
    const { sessionId } = (await this.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
    let loaded!: () => void;
    const load = new Promise<void>((resolve) => (loaded = resolve));
    const listener = (m: Message) => {
      if (m.sessionId !== sessionId || !m.params) return;
      const p = m.params;
      switch (m.method) {
        case 'Runtime.consoleAPICalled': {
          const args = (p['args'] as { value?: unknown; description?: string; type: string }[]) ?? [];
          const text = args.map((a) => (a.value !== undefined ? String(a.value) : (a.description ?? a.type))).join(' ');
          const type = String(p['type']);
          report.console.push(`${type}: ${text}`);
          if (type === 'error' || type === 'assert') report.errors.push(`console.${type}: ${text}`);
          break;
        }
        case 'Runtime.exceptionThrown': {
          const d = p['exceptionDetails'] as { text?: string; exception?: { description?: string } };
          report.errors.push(`uncaught: ${d.exception?.description ?? d.text ?? 'exception'}`);
          break;
        }
        case 'Log.entryAdded': {
          const e = p['entry'] as { level: string; text: string; url?: string };
          if (e.level === 'error') report.errors.push(`log: ${e.text}${e.url ? ` (${e.url})` : ''}`);
          break;
        }
        case 'Network.requestWillBeSent': {
          const u = String((p['request'] as { url: string }).url);
          if (u !== url) report.requests.push(u);
          break;
        }
        case 'Page.loadEventFired':
          loaded();
          break;
      }
    };
    this.listeners.add(listener);
    try {
      for (const m of ['Runtime.enable', 'Log.enable', 'Network.enable', 'Page.enable']) await this.send(m, {}, sessionId);
      await this.send(
        'Emulation.setDeviceMetricsOverride',
        { width: opts.width ?? 1280, height: opts.height ?? 2000, deviceScaleFactor: 1, mobile: false },
        sessionId,
      );
      const nav = (await this.send('Page.navigate', { url }, sessionId)) as { errorText?: string };
      if (nav.errorText) throw new Error(`cannot load ${url}: ${nav.errorText}`);
      const timeoutMs = opts.timeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        load,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no load event for ${url} in ${timeoutMs} ms`)), timeoutMs))),
      ]).finally(() => clearTimeout(timer));
      // Let late console messages and log entries (fired after load) arrive.
      await this.send('Runtime.evaluate', { expression: 'new Promise((r) => setTimeout(r, 50))', awaitPromise: true }, sessionId);
      for (const expression of opts.expressions ?? []) {
        const r = (await this.send('Runtime.evaluate', { expression, returnByValue: true }, sessionId)) as {
          result: { value?: unknown };
          exceptionDetails?: { exception?: { description?: string }; text?: string };
        };
        if (r.exceptionDetails) throw new Error(`evaluating ${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
        report.values.push(r.result.value);
      }
      if (opts.screenshot) {
        const m = (await this.send('Page.getLayoutMetrics', {}, sessionId)) as { cssContentSize: { width: number; height: number } };
        const clip = { x: 0, y: 0, width: m.cssContentSize.width, height: m.cssContentSize.height, scale: 1, ...opts.clip };
        const shot = (await this.send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true, clip }, sessionId)) as {
          data: string;
        };
        fs.writeFileSync(opts.screenshot, Buffer.from(shot.data, 'base64'));
      }
    } finally {
      this.listeners.delete(listener);
      await this.send('Target.closeTarget', { targetId }).catch(() => {});
    }
    return report;
  }

  /** Close the browser (Browser.close, then SIGKILL after 3 s) and remove its profile. */
  async close(): Promise<void> {
    if (!this.exited) {
      const exit = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.send('Browser.close').catch(() => {});
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await exit;
      clearTimeout(timer);
    }
    fs.rmSync(this.profile, { recursive: true, force: true });
  }
}
