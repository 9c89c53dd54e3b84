// containerd's event Envelope, decoded straight from its protobuf bytes into the watcher's WatchEvent. Why by hand:
// the watcher's hot path is "one small message per wakeup", and going through grpc-js + protobufjs (Envelope →
// plain object → Any → a second decode → WatchEvent, with Long conversions and default filling) cost more CPU per
// event than everything else the intake does. The wire format needed is small — varints, length-delimited fields,
// unknown fields skipped — and the field numbers are the ones in ../proto/events.proto and ../proto/task-events.proto
// (containerd's api/services/events/v1 and api/events upstream). test/unit/containerd-watch-envelope.test.ts
// encodes messages with those .proto files and checks this decoder against the proto-loader path.
import { TransshipError } from '@transship/core/errors';
import type { WatchEvent } from './events.js';

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** A cursor over one message's bytes: fields are read in order, unknown ones skipped. */
class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  varint(): number {
    // Up to 64 bits; values above 2^53 lose precision, which no field read here can reach (pids, statuses, seconds).
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw malformed('varint runs past the end');
      const b = this.buf[this.pos++] as number;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw malformed('varint longer than 10 bytes');
  }

  /** Reads a tag; returns the field number and leaves the wire type in `wire`. */
  wire = 0;
  tag(): number {
    const t = this.varint();
    this.wire = t & 7;
    return Math.floor(t / 8);
  }

  /** The [start, end) of a length-delimited field's bytes. */
  len(): number {
    const n = this.varint();
    const start = this.pos;
    if (start + n > this.end) throw malformed('length-delimited field runs past the end');
    this.pos = start + n;
    return start;
  }

  string(): string {
    const start = this.len();
    return this.buf.toString('utf8', start, this.pos);
  }

  skip(): void {
    switch (this.wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.pos += 8;
        break;
      case WIRE_LEN:
        this.len();
        return;
      case WIRE_I32:
        this.pos += 4;
        break;
      default:
        throw malformed(`unsupported wire type ${this.wire}`);
    }
    if (this.pos > this.end) throw malformed('fixed-width field runs past the end');
  }
}

function malformed(what: string): TransshipError {
  return new TransshipError('TS_CONTAINERD_PROTOCOL', `containerd event: malformed protobuf (${what})`);
}

/** google.protobuf.Timestamp at [start, end) → ms since the epoch, or undefined for unset/zero/negative times. */
function timestampMs(buf: Buffer, start: number, end: number): number | undefined {
  const r = new Reader(buf, start, end);
  let seconds = 0;
  let nanos = 0;
  while (r.pos < r.end) {
    const f = r.tag();
    if (f === 1 && r.wire === WIRE_VARINT) {
      seconds = r.varint();
      // int64 in two's complement: containerd's zero time (0001-01-01) is negative and arrives as a huge varint.
      if (seconds >= 2 ** 63) seconds -= 2 ** 64;
    } else if (f === 2 && r.wire === WIRE_VARINT) nanos = r.varint() | 0;
    else r.skip();
  }
  const ms = seconds * 1000 + Math.floor(nanos / 1e6);
  return ms > 0 ? ms : undefined;
}

/** The fields of every payload the watcher reads (each payload uses a subset; names as in the .proto files). */
interface Payload {
  containerId: string;
  /** TaskExit.id / TaskDelete.id (exec id), ContainerCreate.id / ContainerDelete.id. */
  id: string;
  bundle: string;
  execId: string;
  image: string;
  runtime: string;
  pid: number;
  exitStatus: number;
  exitedAt: number | undefined;
}

/** Field numbers per payload type: which field of which wire type means what. */
type FieldMap = Record<number, keyof Payload>;
const PAYLOADS: Record<string, FieldMap> = {
  TaskCreate: { 1: 'containerId', 2: 'bundle', 6: 'pid' },
  TaskStart: { 1: 'containerId', 2: 'pid' },
  TaskExit: { 1: 'containerId', 2: 'id', 3: 'pid', 4: 'exitStatus', 5: 'exitedAt' },
  TaskOOM: { 1: 'containerId' },
  TaskDelete: { 1: 'containerId', 2: 'pid', 3: 'exitStatus', 4: 'exitedAt', 5: 'id' },
  TaskExecAdded: { 1: 'containerId', 2: 'execId' },
  TaskExecStarted: { 1: 'containerId', 2: 'execId', 3: 'pid' },
  TaskPaused: { 1: 'containerId' },
  TaskResumed: { 1: 'containerId' },
  ContainerCreate: { 1: 'id', 2: 'image', 3: 'runtime' },
  ContainerDelete: { 1: 'id' },
};

function decodePayload(fields: FieldMap, buf: Buffer, start: number, end: number): Payload {
  const p: Payload = { containerId: '', id: '', bundle: '', execId: '', image: '', runtime: '', pid: 0, exitStatus: 0, exitedAt: undefined };
  const r = new Reader(buf, start, end);
  while (r.pos < r.end) {
    const name = fields[r.tag()];
    if (name === undefined) {
      r.skip();
      continue;
    }
    if (name === 'pid' || name === 'exitStatus') {
      if (r.wire !== WIRE_VARINT) r.skip();
      else p[name] = r.varint() >>> 0; // uint32
    } else if (r.wire !== WIRE_LEN) r.skip();
    else if (name === 'exitedAt') {
      const s = r.len();
      p.exitedAt = timestampMs(buf, s, r.pos);
    } else if (name === 'runtime') {
      // ContainerCreate.Runtime{name = 1, options = 2}
      const s = r.len();
      const rr = new Reader(buf, s, r.pos);
      while (rr.pos < rr.end) {
        if (rr.tag() === 1 && rr.wire === WIRE_LEN) p.runtime = rr.string();
        else rr.skip();
      }
    } else p[name] = r.string();
  }
  return p;
}

/**
 * One Envelope{timestamp = 1, namespace = 2, topic = 3, event = 4 (Any{type_url = 1, value = 2})} → WatchEvent.
 * Same mapping as toWatchEvent (events.ts) on a proto-loader-decoded envelope; a payload type the watcher does not
 * know becomes `other`.
 */
export function decodeEnvelope(buf: Buffer, receivedAt: number, start = 0, end = buf.length): WatchEvent {
  const r = new Reader(buf, start, end);
  let at: number | undefined;
  let namespace = '';
  let topic = '';
  let typeUrl = '';
  let valueStart = -1;
  let valueEnd = -1;
  while (r.pos < r.end) {
    const f = r.tag();
    if (r.wire !== WIRE_LEN) {
      r.skip();
      continue;
    }
    if (f === 1) {
      const s = r.len();
      at = timestampMs(buf, s, r.pos);
    } else if (f === 2) namespace = r.string();
    else if (f === 3) topic = r.string();
    else if (f === 4) {
      const s = r.len();
      const a = new Reader(buf, s, r.pos);
      while (a.pos < a.end) {
        const af = a.tag();
        if (af === 1 && a.wire === WIRE_LEN) typeUrl = a.string();
        else if (af === 2 && a.wire === WIRE_LEN) {
          valueStart = a.len();
          valueEnd = a.pos;
        } else a.skip();
      }
      // An Any with no value field is an empty message of its type (proto3 omits it).
      if (valueStart < 0) valueStart = valueEnd = r.pos;
    } else r.skip();
  }
  const base = { namespace, at: at ?? receivedAt };
  const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1).replace(/^containerd\.events\./, '');
  const fields = valueStart >= 0 ? PAYLOADS[typeName] : undefined;
  if (!fields) return { ...base, kind: 'other', topic };
  const p = decodePayload(fields, buf, valueStart, valueEnd);
  const cid = p.containerId;
  switch (topic) {
    case '/containers/create':
      return { ...base, kind: 'container-create', id: p.id, image: p.image, runtime: p.runtime };
    case '/containers/delete':
      return { ...base, kind: 'container-delete', id: p.id };
    case '/tasks/create':
      return { ...base, kind: 'task-create', id: cid, pid: p.pid, bundle: p.bundle };
    case '/tasks/start':
      return { ...base, kind: 'task-start', id: cid, pid: p.pid };
    case '/tasks/exec-added':
      return { ...base, kind: 'exec-added', id: cid, execId: p.execId };
    case '/tasks/exec-started':
      return { ...base, kind: 'exec-started', id: cid, execId: p.execId, pid: p.pid };
    case '/tasks/oom':
      return { ...base, kind: 'task-oom', id: cid };
    case '/tasks/exit':
      return { ...base, kind: 'task-exit', id: cid, execId: p.id || cid, pid: p.pid, exitStatus: p.exitStatus, exitedAt: p.exitedAt ?? base.at };
    case '/tasks/delete':
      return { ...base, kind: 'task-delete', id: cid, pid: p.pid, exitStatus: p.exitStatus };
    case '/tasks/paused':
      return { ...base, kind: 'task-paused', id: cid };
    case '/tasks/resumed':
      return { ...base, kind: 'task-resumed', id: cid };
    default:
      return { ...base, kind: 'other', topic };
  }
}
