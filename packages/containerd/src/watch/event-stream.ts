// containerd's event stream (Events/Subscribe) read over node:http2 directly, not through grpc-js. Why: the watcher
// lives on the stream's hot path, and on a node where every wakeup is expensive the receive side dominated its CPU —
// grpc-js's call stack, interceptors, object-mode streams and protobufjs decode cost more per event than the
// lifecycle bookkeeping itself. Here one gRPC message is a 5-byte prefix and an Envelope decoded by hand
// (envelope.ts) straight into a WatchEvent. grpc-js stays for the unary API calls (reconcile, doctor).
//
// Read coalescing (coalescingSocket below): while events keep coming, the socket is drained every `coalesceMs` by one
// timer instead of waking the process for each event; an event after a quiet spell is read at once. Events carry
// containerd's own timestamps, so spans and phase durations do not move; only delivery is up to `coalesceMs` later.
// A read that fills the buffer keeps reading (a flood is drained at full speed, never throttled).
//
// The Version call that proves a session (containerd sends no stream headers until the first event) runs on the
// same HTTP/2 connection as the stream.
import { connect as http2Connect, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { readSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TransshipError, cancelledError, withoutStackTraces } from '@transship/core/errors';
import { errorFromGrpcStatus } from '../client.js';
import { decodeEnvelope } from './envelope.js';
import type { WatchEvent } from './events.js';

const SUBSCRIBE = '/containerd.services.events.v1.Events/Subscribe';
const VERSION = '/containerd.services.version.v1.Version/Version';
/** Largest gRPC message accepted on the stream (an Envelope is a few hundred bytes). */
const MAX_MESSAGE = 4 * 1024 * 1024;
const READ_BUFFER = 64 * 1024;

export interface EventStreamOptions {
  /** containerd's socket path. */
  address: string;
  filters: string[];
  /** See the file comment; 0 reads every event as it comes. */
  coalesceMs: number;
  /** One call per decoded event, synchronously on the read path. */
  onEvent(ev: WatchEvent): void;
  /** After the events of one read were delivered. */
  onBatch?(): void;
  /**
   * Pacing of the reads: true while the socket is drained by the polling timer (the process is then awake at least
   * every `coalesceMs`, so other periodic work can ride on those wakeups instead of arming timers of its own), false
   * when reads are event-driven again (quiet, or the stream ended).
   */
  onPacing?(paced: boolean): void;
  /** After every timer-driven read of the socket, empty or not. */
  onPoll?(): void;
}

export interface EventStream {
  /** Rejects when the stream ends or fails (never resolves): TS_CONTAINERD_UNREACHABLE or the gRPC status's code. */
  readonly ended: Promise<never>;
  /** A Version call on the same connection; resolves once containerd answered it. */
  version(timeoutMs: number, signal: AbortSignal): Promise<void>;
  close(): void;
}

/** SubscribeRequest{repeated string filters = 1}, framed as one gRPC message. */
export function subscribeRequestFrame(filters: string[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of filters) {
    const s = Buffer.from(f, 'utf8');
    parts.push(Buffer.from([0x0a]), varint(s.length), s);
  }
  return grpcFrame(Buffer.concat(parts));
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

function grpcFrame(msg: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/**
 * gRPC's length-prefixed messages out of HTTP/2 DATA chunks (a message may span chunks, a chunk may hold several).
 * Calls `onMessage(buf, start, end)`; the bytes are only valid during the call.
 */
export class GrpcMessageReader {
  private pending: Buffer | undefined;

  constructor(private readonly onMessage: (buf: Buffer, start: number, end: number) => void) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    let pos = 0;
    while (buf.length - pos >= 5) {
      if (buf[pos] !== 0) throw new TransshipError('TS_CONTAINERD_PROTOCOL', 'containerd sent a compressed gRPC message (none was negotiated)');
      const len = buf.readUInt32BE(pos + 1);
      if (len > MAX_MESSAGE) throw new TransshipError('TS_CONTAINERD_PROTOCOL', `containerd sent a ${len}-byte event (limit ${MAX_MESSAGE})`);
      if (buf.length - pos - 5 < len) break;
      this.onMessage(buf, pos + 5, pos + 5 + len);
      pos += 5 + len;
    }
    if (pos < buf.length) this.pending = Buffer.from(buf.subarray(pos)); // copy: the chunk's memory is not ours to keep
  }

  get buffered(): number {
    return this.pending?.length ?? 0;
  }
}

/** gRPC status from response headers or trailers; undefined when the block carries none. */
function statusOf(h: IncomingHttpHeaders): { code: number; message: string } | undefined {
  const s = h['grpc-status'];
  if (s === undefined) return undefined;
  let message = String(h['grpc-message'] ?? '');
  try {
    message = decodeURIComponent(message);
  } catch {
    // not percent-encoded after all: keep it as sent
  }
  return { code: Number(s), message };
}

/** The OS descriptor behind a connected net.Socket (libuv's stream handle exposes it as `fd`), if there is one. */
function fdOf(sock: Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * A duplex over the unix socket that http2 runs on, read in one of two modes:
 * - event-driven (idle node): libuv reads whenever data arrives, one wakeup per event;
 * - polling (events keep coming): after a read, libuv stops reading and a timer drains the socket every
 *   `coalesceMs` with a non-blocking read of its descriptor, so a burst costs one wakeup per period however many
 *   events it holds. Two empty polls in a row hand the socket back to libuv.
 * Why not libuv's readStop/readStart alone: libuv drops a stopped descriptor from epoll lazily, at its next event,
 * so each stop still cost one wakeup for the first event that arrived while stopped — half the saving gone.
 */
function coalescingSocket(path: string, coalesceMs: number, onSocketError: (err: Error) => void, pacing: Pick<EventStreamOptions, 'onPacing' | 'onPoll'> = {}): Duplex {
  let timer: NodeJS.Timeout | undefined;
  let emptyPolls = 0;
  let paced = false;
  const setPaced = (p: boolean): void => {
    if (paced === p) return;
    paced = p;
    pacing.onPacing?.(p);
  };
  const pollBuf = Buffer.allocUnsafe(READ_BUFFER);
  // eslint-disable-next-line prefer-const -- assigned once below; the callbacks refer to it
  let sock: Socket;
  const duplex = new Duplex({
    read() {
      // data is pushed as the socket delivers it (http2 consumes it at once)
    },
    write(chunk: Buffer, _enc, cb) {
      sock.write(chunk, (err) => cb(err ?? null));
    },
    final(cb) {
      sock.end(() => cb());
    },
    destroy(err, cb) {
      stopPolling();
      sock.destroy();
      cb(err);
    },
  });
  const stopPolling = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    setPaced(false);
  };
  const poll = (): void => {
    timer = undefined;
    // Only while the socket is open: its descriptor is closed (and may be reused) once it is destroyed.
    const fd = sock.destroyed || duplex.destroyed ? undefined : fdOf(sock);
    if (fd === undefined) return setPaced(false);
    let got = 0;
    let reads = 0;
    for (;;) {
      let n: number;
      // An empty socket answers EAGAIN, thrown as an Error: built without a stack trace (most of its cost).
      try {
        n = withoutStackTraces(() => readSync(fd, pollBuf, 0, pollBuf.length, null));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
        onSocketError(err as Error);
        duplex.destroy(err as Error);
        return;
      }
      if (n === 0) {
        setPaced(false);
        duplex.push(null); // containerd closed the connection
        sock.destroy();
        return;
      }
      got += n;
      duplex.push(Buffer.from(pollBuf.subarray(0, n)));
      if (n < pollBuf.length) break;
      if (++reads >= 32) {
        // a flood: hand the loop back for a moment (other I/O, the processor) and drain on at once
        timer = setTimeout(poll, 0);
        pacing.onPoll?.();
        return;
      }
    }
    if (got === 0 && ++emptyPolls >= 2) {
      emptyPolls = 0;
      setPaced(false);
      sock.resume(); // quiet again: back to event-driven reads
      pacing.onPoll?.();
      return;
    }
    if (got > 0) emptyPolls = 0;
    timer = setTimeout(poll, coalesceMs);
    pacing.onPoll?.();
  };
  sock = netConnect({
    path,
    onread: {
      buffer: Buffer.allocUnsafe(READ_BUFFER),
      callback: (n: number, buf: Uint8Array): boolean => {
        duplex.push(Buffer.from(buf.subarray(0, n))); // copy: the read buffer is reused
        // A full buffer means more is waiting: let libuv keep reading. Without a descriptor, no polling either.
        if (coalesceMs <= 0 || n >= buf.length || duplex.destroyed || fdOf(sock) === undefined) return true;
        timer = setTimeout(poll, coalesceMs);
        setPaced(true);
        return false; // readStop: the timer reads from now on
      },
    },
  });
  sock.on('error', (err) => {
    onSocketError(err);
    duplex.destroy(err);
  });
  sock.on('end', () => duplex.push(null));
  sock.on('close', () => {
    stopPolling();
    if (!duplex.destroyed) duplex.destroy();
  });
  return duplex;
}

export function openEventStream(o: EventStreamOptions): EventStream {
  let socketError: Error | undefined;
  const socket = coalescingSocket(o.address, o.coalesceMs, (err) => (socketError ??= err), { onPacing: (p) => o.onPacing?.(p), onPoll: () => o.onPoll?.() });
  const session: ClientHttp2Session = http2Connect('http://localhost', {
    createConnection: () => socket,
    settings: { enablePush: false, initialWindowSize: 1 << 20 },
  });
  let sessionError: Error | undefined;
  session.on('error', (err: Error) => (sessionError ??= err));

  const unreachable = (what: string): TransshipError => {
    const cause = socketError ?? sessionError;
    return new TransshipError('TS_CONTAINERD_UNREACHABLE', `containerd at ${o.address}: ${what}${cause ? `: ${cause.message}` : ''}`, { cause });
  };

  const req: ClientHttp2Stream = session.request({ ':method': 'POST', ':path': SUBSCRIBE, 'content-type': 'application/grpc', te: 'trailers' });
  req.end(subscribeRequestFrame(o.filters));
  let status: { code: number; message: string } | undefined;
  let failure: TransshipError | undefined;
  const reader = new GrpcMessageReader((buf, start, end) => o.onEvent(decodeEnvelope(buf, Date.now(), start, end)));
  req.on('response', (h) => {
    status ??= statusOf(h);
    if (h[':status'] !== 200) failure ??= new TransshipError('TS_CONTAINERD_PROTOCOL', `containerd Events/Subscribe: HTTP status ${h[':status']}`);
  });
  req.on('data', (chunk: Buffer) => {
    if (failure) return;
    try {
      reader.push(chunk);
    } catch (err) {
      failure = err as TransshipError;
      req.close();
    }
    o.onBatch?.();
  });
  req.on('trailers', (h) => (status ??= statusOf(h)));
  req.on('error', () => undefined); // reported through 'close' below, with what we know
  const ended = new Promise<never>((_, reject) => {
    req.on('close', () => {
      if (failure) reject(failure);
      else if (status && status.code !== 0) reject(errorFromGrpcStatus(status.code, status.message, 'containerd Events/Subscribe'));
      else if (status) reject(new TransshipError('TS_CONTAINERD_UNREACHABLE', 'containerd ended the event stream'));
      else reject(unreachable('event stream closed'));
      session.close();
    });
  });
  ended.catch(() => undefined); // the caller observes it; this only keeps an early failure from being "unhandled"

  return {
    ended,
    version: (timeoutMs, signal) =>
      new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(cancelledError(signal));
        let vstatus: { code: number; message: string } | undefined;
        let call: ClientHttp2Stream;
        try {
          call = session.request({ ':method': 'POST', ':path': VERSION, 'content-type': 'application/grpc', te: 'trailers' });
        } catch (err) {
          return reject(unreachable(`Version: ${(err as Error).message}`));
        }
        const timer = setTimeout(() => {
          call.close();
          reject(new TransshipError('TS_TIMEOUT', `containerd Version: no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        const onAbort = (): void => {
          call.close();
          reject(cancelledError(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        call.end(grpcFrame(Buffer.alloc(0)));
        call.on('response', (h) => (vstatus ??= statusOf(h)));
        call.on('trailers', (h) => (vstatus ??= statusOf(h)));
        call.on('data', () => undefined); // the version strings are not needed, only the answer
        call.on('error', () => undefined);
        call.on('close', () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          if (vstatus?.code === 0) resolve();
          else if (vstatus) reject(errorFromGrpcStatus(vstatus.code, vstatus.message, 'containerd Version'));
          else reject(unreachable('Version call closed without a status'));
        });
      }),
    close: () => {
      req.close();
      session.destroy();
    },
  };
}
