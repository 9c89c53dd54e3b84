// The watcher's own tracer for OTLP/HTTP (JSON) export. Why not the SDK's BasicTracerProvider + OTLPTraceExporter:
// measured in bench/watch.ts, the SDK path (span objects with hrtime bookkeeping, attribute sanitizing, span-processor
// fan-out, then a second conversion into OTLP objects before JSON.stringify) cost the watcher ~3 ms of CPU per
// container lifecycle — a third of everything it did. The watcher's spans are simple: a name, two containerd
// timestamps, a parent, a few flat attributes, a status. Here a span is that record, encoded straight into OTLP's JSON
// shape when it ends, and batched through the same bounded pipeline as before (span-export.ts: drops counted, the
// event processor pushed back when the backlog is high).
//
// It implements @opentelemetry/api's Tracer and Span, so Lifecycles does not know which tracer it talks to (the tests
// keep using the SDK with an in-memory exporter). Export goes through the project's one retry function.
import { SpanKind, SpanStatusCode, trace, type Attributes, type AttributeValue, type Context, type Exception, type Link, type Span, type SpanContext, type SpanOptions, type SpanStatus, type TimeInput, type Tracer } from '@opentelemetry/api';
import { randomFillSync } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { TransshipError } from '@transship/core/errors';
import { observedRetry } from '@transship/core/observed-retry';
import { BoundedBatcher, type ExportOptions, type SpanBacklog } from './span-export.js';

/** One ended span, already in OTLP/JSON form (opentelemetry-proto's trace.proto, JSON mapping). */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpKeyValue[];
  status: { code: number; message?: string };
}
export interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}
export type OtlpAnyValue = { stringValue: string } | { boolValue: boolean } | { intValue: number } | { doubleValue: number } | { arrayValue: { values: OtlpAnyValue[] } };

// Random ids from a pooled buffer: one getrandom call per 512 ids, not one per span.
const pool = Buffer.allocUnsafe(4096);
let poolAt = pool.length;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const s = pool.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}

/** TimeInput → ms since the epoch (a number not above performance.now() is a performance.now() value, as in the SDK). */
function epochMs(t: TimeInput | undefined): number {
  if (t === undefined) return Date.now();
  if (typeof t === 'number') return t <= performance.now() ? performance.timeOrigin + t : t;
  if (t instanceof Date) return t.getTime();
  return t[0] * 1000 + t[1] / 1e6;
}

/** ms since the epoch (fractional) → decimal nanoseconds, exactly (a double cannot hold epoch nanoseconds). */
export function unixNano(ms: number): string {
  let whole = Math.floor(ms);
  let sub = Math.round((ms - whole) * 1e6);
  if (sub >= 1e6) {
    whole += 1;
    sub -= 1e6;
  }
  return whole === 0 ? String(sub) : `${whole}${String(sub).padStart(6, '0')}`;
}

function anyValue(v: AttributeValue): OtlpAnyValue | undefined {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { intValue: v } : { doubleValue: v };
  if (Array.isArray(v)) {
    const values: OtlpAnyValue[] = [];
    for (const x of v as unknown[]) {
      if (x === null || x === undefined) continue;
      const a = anyValue(x as AttributeValue);
      if (a) values.push(a);
    }
    return { arrayValue: { values } };
  }
  return undefined;
}

class OtlpSpanImpl implements Span {
  private readonly attrs = new Map<string, AttributeValue>();
  private status: SpanStatus = { code: SpanStatusCode.UNSET };
  private ended = false;
  private readonly ctx: SpanContext;

  constructor(
    private name: string,
    private readonly startMs: number,
    private readonly parentSpanId: string | undefined,
    traceId: string,
    private readonly kind: SpanKind,
    attributes: Attributes | undefined,
    private readonly onEnd: (s: OtlpSpan) => void,
  ) {
    this.ctx = { traceId, spanId: randomHex(8), traceFlags: 1 };
    if (attributes) this.setAttributes(attributes);
  }

  spanContext(): SpanContext {
    return this.ctx;
  }

  setAttribute(key: string, value: AttributeValue | undefined): this {
    if (!this.ended && value !== undefined && value !== null) this.attrs.set(key, value);
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const k in attributes) this.setAttribute(k, attributes[k]);
    return this;
  }

  // The watcher records no span events or links; accepted and dropped, as the API allows a non-recording subset.
  addEvent(): this {
    return this;
  }

  addLink(_link: Link): this {
    return this;
  }

  addLinks(_links: Link[]): this {
    return this;
  }

  setStatus(status: SpanStatus): this {
    if (!this.ended) this.status = status;
    return this;
  }

  updateName(name: string): this {
    if (!this.ended) this.name = name;
    return this;
  }

  isRecording(): boolean {
    return !this.ended;
  }

  recordException(_exception: Exception, _time?: TimeInput): void {}

  end(endTime?: TimeInput): void {
    if (this.ended) return;
    this.ended = true;
    const endMs = Math.max(epochMs(endTime), this.startMs);
    const attributes: OtlpKeyValue[] = [];
    for (const [key, v] of this.attrs) {
      const value = anyValue(v);
      if (value) attributes.push({ key, value });
    }
    this.onEnd({
      traceId: this.ctx.traceId,
      spanId: this.ctx.spanId,
      ...(this.parentSpanId ? { parentSpanId: this.parentSpanId } : {}),
      name: this.name,
      kind: this.kind + 1, // OTLP numbers kinds from 1 (SPAN_KIND_INTERNAL); the API from 0
      startTimeUnixNano: unixNano(this.startMs),
      endTimeUnixNano: unixNano(endMs),
      attributes,
      status: this.status.message ? { code: this.status.code, message: this.status.message } : { code: this.status.code },
    });
  }
}

export interface OtlpTracerOptions extends ExportOptions {
  /** The OTLP/HTTP traces endpoint (…/v1/traces). */
  url: string;
  serviceName: string;
  timeoutMs?: number;
}

/** A Tracer whose spans go, batched and bounded, to an OTLP/HTTP (JSON) collector. */
export class OtlpTracer implements Tracer {
  private readonly batcher: BoundedBatcher<OtlpSpan>;
  private readonly url: URL;
  private readonly agent: Agent;
  private readonly resource: { attributes: OtlpKeyValue[] };
  private readonly timeoutMs: number;
  private readonly stop = new AbortController();

  constructor(opts: OtlpTracerOptions) {
    this.url = new URL(opts.url);
    if (this.url.protocol !== 'http:' && this.url.protocol !== 'https:') throw new TransshipError('TS_USAGE', `OTLP endpoint must be http(s), got ${opts.url}`);
    this.agent = this.url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, maxSockets: 1 }) : new Agent({ keepAlive: true, maxSockets: 1 });
    this.resource = { attributes: [{ key: 'service.name', value: { stringValue: opts.serviceName } }] };
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.batcher = new BoundedBatcher<OtlpSpan>((batch) => this.post(batch), opts);
  }

  /** The backlog the event processor pushes back on. */
  get spans(): SpanBacklog {
    return this.batcher;
  }

  get exported(): number {
    return this.batcher.exported;
  }

  startSpan(name: string, options: SpanOptions = {}, context?: Context): Span {
    const parent = options.root || context === undefined ? undefined : trace.getSpanContext(context);
    return new OtlpSpanImpl(name, epochMs(options.startTime), parent?.spanId, parent?.traceId ?? randomHex(16), options.kind ?? SpanKind.INTERNAL, options.attributes, (s) => this.batcher.push(s));
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...rest: [F] | [SpanOptions, F] | [SpanOptions, Context, F]): ReturnType<F> {
    const fn = rest[rest.length - 1] as F;
    const options = rest.length >= 2 ? (rest[0] as SpanOptions) : {};
    const ctx = rest.length === 3 ? rest[1] : undefined;
    return fn(this.startSpan(name, options, ctx)) as ReturnType<F>;
  }

  /** The request body for one batch (exported for tests). */
  body(batch: OtlpSpan[]): string {
    return JSON.stringify({ resourceSpans: [{ resource: this.resource, scopeSpans: [{ scope: { name: 'transship-watch' }, spans: batch }] }] });
  }

  private async post(batch: OtlpSpan[]): Promise<{ ok: boolean; error?: string }> {
    const body = this.body(batch);
    await observedRetry({ store: `otlp:${this.url.host}`, operation: 'otlp.export', signal: this.stop.signal, retry: { maxAttempts: 3, baseDelayMs: 500, maxDelayMs: 2000, maxElapsedMs: 10_000 } }, (signal) => this.postOnce(body, signal));
    return { ok: true };
  }

  private postOnce(body: string, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
      const req = send(this.url, { method: 'POST', agent: this.agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, signal, timeout: this.timeoutMs }, (res) => {
        res.resume(); // the body (a partial-success document) is not needed
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve();
          const retryable = status === 408 || status === 429 || status >= 500;
          reject(new TransshipError(retryable ? 'TS_BACKEND_UNAVAILABLE' : 'TS_BACKEND_REJECTED', `OTLP collector ${this.url.host} answered HTTP ${status}`));
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new TransshipError('TS_TIMEOUT', `OTLP collector ${this.url.host}: no answer within ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Exports what is queued (SIGTERM: open traces were just ended). */
  async forceFlush(): Promise<void> {
    await this.batcher.flush();
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
    this.stop.abort();
    this.agent.destroy();
  }
}
