// The watcher's hand-written protobuf decoder (src/containerd/watch/envelope.ts) against messages encoded from the
// project's .proto files (src/containerd/proto, field numbers as containerd's API) by protobufjs through
// @grpc/proto-loader — the path the watcher used before it read the stream itself. Guards: a field number or wire
// type wrong in the decoder, containerd's negative zero time, unknown fields, messages split across HTTP/2 chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { protoMethod } from '@transship/containerd/client';
import { decodeEnvelope } from '@transship/containerd/watch/envelope';
import { GrpcMessageReader, subscribeRequestFrame } from '@transship/containerd/watch/event-stream';
import type { WatchEvent } from '@transship/containerd/watch/events';
import { TransshipError } from '@transship/core/errors';

const envelope = protoMethod('containerd.services.events.v1.Events', 'Subscribe');

function encodePayload(name: string, msg: object): Buffer {
  return protoMethod('containerd.events.Payloads', name).requestSerialize(msg);
}

const T = { seconds: '1764063000', nanos: 123_456_789 };
const T_MS = 1764063000_123;
const RECEIVED = 1_800_000_000_000;

function env(topic: string, typeName: string | undefined, msg: object, over: object = {}): Buffer {
  return envelope.responseSerialize({
    timestamp: T,
    namespace: 'k8s.io',
    topic,
    event: typeName ? { type_url: `containerd.events.${typeName}`, value: encodePayload(typeName, msg) } : null,
    ...over,
  });
}

function decode(b: Buffer): WatchEvent {
  return decodeEnvelope(b, RECEIVED);
}

const base = { namespace: 'k8s.io', at: T_MS };

test('envelope decoder: every topic the watcher follows, encoded from the real .proto definitions', () => {
  assert.deepEqual(decode(env('/containers/create', 'ContainerCreate', { id: 'c1', image: 'docker.io/library/busybox:latest', runtime: { name: 'io.containerd.runc.v2', options: { type_url: 'x', value: Buffer.from([1, 2]) } } })), { ...base, kind: 'container-create', id: 'c1', image: 'docker.io/library/busybox:latest', runtime: 'io.containerd.runc.v2' });
  assert.deepEqual(decode(env('/containers/delete', 'ContainerDelete', { id: 'c1' })), { ...base, kind: 'container-delete', id: 'c1' });
  assert.deepEqual(decode(env('/tasks/create', 'TaskCreate', { container_id: 'c1', bundle: '/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1', pid: 4_000_123 })), { ...base, kind: 'task-create', id: 'c1', pid: 4_000_123, bundle: '/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1' });
  assert.deepEqual(decode(env('/tasks/start', 'TaskStart', { container_id: 'c1', pid: 42 })), { ...base, kind: 'task-start', id: 'c1', pid: 42 });
  assert.deepEqual(decode(env('/tasks/exec-added', 'TaskExecAdded', { container_id: 'c1', exec_id: 'e1' })), { ...base, kind: 'exec-added', id: 'c1', execId: 'e1' });
  assert.deepEqual(decode(env('/tasks/exec-started', 'TaskExecStarted', { container_id: 'c1', exec_id: 'e1', pid: 77 })), { ...base, kind: 'exec-started', id: 'c1', execId: 'e1', pid: 77 });
  assert.deepEqual(decode(env('/tasks/oom', 'TaskOOM', { container_id: 'c1' })), { ...base, kind: 'task-oom', id: 'c1' });
  // uint32 exit status above 2^31 (a signal-ish status some shims report) stays unsigned
  assert.deepEqual(decode(env('/tasks/exit', 'TaskExit', { container_id: 'c1', id: 'c1', pid: 42, exit_status: 4_294_967_295, exited_at: { seconds: '1764063001', nanos: 5_000_000 } })), { ...base, kind: 'task-exit', id: 'c1', execId: 'c1', pid: 42, exitStatus: 4_294_967_295, exitedAt: 1764063001_005 });
  // an exec's exit names the exec; an init exit with no id means the init
  assert.equal((decode(env('/tasks/exit', 'TaskExit', { container_id: 'c1', id: 'e1', pid: 77, exit_status: 3 })) as { execId: string }).execId, 'e1');
  assert.equal((decode(env('/tasks/exit', 'TaskExit', { container_id: 'c1', pid: 42, exit_status: 137 })) as { execId: string }).execId, 'c1');
  assert.deepEqual(decode(env('/tasks/delete', 'TaskDelete', { container_id: 'c1', pid: 42, exit_status: 137, exited_at: T, id: '' })), { ...base, kind: 'task-delete', id: 'c1', pid: 42, exitStatus: 137 });
  assert.deepEqual(decode(env('/tasks/paused', 'TaskPaused', { container_id: 'c1' })), { ...base, kind: 'task-paused', id: 'c1' });
  assert.deepEqual(decode(env('/tasks/resumed', 'TaskResumed', { container_id: 'c1' })), { ...base, kind: 'task-resumed', id: 'c1' });
});

test('envelope decoder: zero values, containerd\'s zero time, unknown payloads and topics', () => {
  // proto3 leaves zero fields out: an exit status 0 and pid 0 must come back as 0, not undefined
  assert.deepEqual(decode(env('/tasks/exit', 'TaskExit', { container_id: 'c1', id: 'c1' })), { ...base, kind: 'task-exit', id: 'c1', execId: 'c1', pid: 0, exitStatus: 0, exitedAt: T_MS });
  // containerd sends 0001-01-01 (negative seconds, a 10-byte varint) for "never": the receive time stands in
  const zero = { seconds: '-62135596800', nanos: 0 };
  assert.deepEqual(decode(env('/tasks/start', 'TaskStart', { container_id: 'c1', pid: 1 }, { timestamp: zero })), { namespace: 'k8s.io', at: RECEIVED, kind: 'task-start', id: 'c1', pid: 1 });
  assert.equal((decode(env('/tasks/exit', 'TaskExit', { container_id: 'c1', exited_at: zero }, {})) as { exitedAt: number }).exitedAt, T_MS);
  assert.deepEqual(decode(env('/tasks/start', 'TaskStart', { container_id: 'c1', pid: 1 }, { timestamp: null })).at, RECEIVED);
  // a payload type the watcher does not know, a topic it does not follow, no payload at all
  assert.deepEqual(decode(envelope.responseSerialize({ timestamp: T, namespace: 'k8s.io', topic: '/snapshot/prepare', event: { type_url: 'containerd.events.SnapshotPrepare', value: Buffer.from([0x0a, 0x01, 0x61]) } })), { ...base, kind: 'other', topic: '/snapshot/prepare' });
  assert.deepEqual(decode(env('/tasks/checkpointed', 'TaskOOM', { container_id: 'c1' })), { ...base, kind: 'other', topic: '/tasks/checkpointed' });
  assert.deepEqual(decode(env('/tasks/oom', undefined, {})), { ...base, kind: 'other', topic: '/tasks/oom' });
  // a type URL with a host prefix (typeurl's long form) names the same payload
  const long = envelope.responseSerialize({ timestamp: T, namespace: 'ns', topic: '/tasks/oom', event: { type_url: 'types.containerd.io/containerd.events.TaskOOM', value: encodePayload('TaskOOM', { container_id: 'c9' }) } });
  assert.deepEqual(decode(long), { namespace: 'ns', at: T_MS, kind: 'task-oom', id: 'c9' });
  // an empty payload (every field at its zero value) is still that payload
  assert.deepEqual(decode(env('/tasks/oom', 'TaskOOM', {})), { ...base, kind: 'task-oom', id: '' });
});

test('envelope decoder: unknown fields of every wire type are skipped (a newer containerd adds fields)', () => {
  const extra = Buffer.from([
    0x78, 0x96, 0x01, // field 15, varint 150
    0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, // field 16, fixed64
    0x8a, 0x01, 0x03, 0x61, 0x62, 0x63, // field 17, bytes "abc"
    0x95, 0x01, 9, 9, 9, 9, // field 18, fixed32
  ]);
  const value = Buffer.concat([encodePayload('TaskExit', { container_id: 'c1', id: 'c1', pid: 42, exit_status: 1 }), extra]);
  const b = Buffer.concat([envelope.responseSerialize({ timestamp: T, namespace: 'k8s.io', topic: '/tasks/exit', event: { type_url: 'containerd.events.TaskExit', value } }), extra]);
  assert.deepEqual(decode(b), { ...base, kind: 'task-exit', id: 'c1', execId: 'c1', pid: 42, exitStatus: 1, exitedAt: T_MS });
});

test('envelope decoder: truncated or malformed bytes → TS_CONTAINERD_PROTOCOL, never a wrong event', () => {
  const good = env('/tasks/start', 'TaskStart', { container_id: 'c1', pid: 42 });
  const isProtocol = (e: unknown): boolean => e instanceof TransshipError && e.code === 'TS_CONTAINERD_PROTOCOL';
  for (const cut of [1, 5, good.length - 1]) assert.throws(() => decode(good.subarray(0, cut)), isProtocol, `cut at ${cut}`);
  assert.throws(() => decode(Buffer.from([0x0b])), isProtocol); // wire type 3 (groups) is not proto3
  assert.throws(() => decode(Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), isProtocol); // varint > 10 bytes
});

test('gRPC framing: SubscribeRequest round-trips through the .proto; messages split across and packed into chunks', () => {
  const frame = subscribeRequestFrame(['topic~="^/tasks/"', 'namespace=="k8s.io",topic~="^/containers/"']);
  assert.equal(frame[0], 0);
  assert.equal(frame.readUInt32BE(1), frame.length - 5);
  assert.deepEqual(envelope.requestDeserialize(frame.subarray(5)), { filters: ['topic~="^/tasks/"', 'namespace=="k8s.io",topic~="^/containers/"'] });

  const msgs = [env('/tasks/start', 'TaskStart', { container_id: 'a', pid: 1 }), env('/tasks/start', 'TaskStart', { container_id: 'b', pid: 2 }), env('/tasks/start', 'TaskStart', { container_id: 'c', pid: 3 })];
  const stream = Buffer.concat(msgs.map((m) => Buffer.concat([Buffer.from([0, 0, 0, 0, m.length]), m])));
  for (const sizes of [[stream.length], [1, 2, 3, stream.length], [7, 40, 200, stream.length]]) {
    const got: string[] = [];
    const r = new GrpcMessageReader((buf, s, e) => got.push((decodeEnvelope(buf, RECEIVED, s, e) as { id: string }).id));
    let pos = 0;
    for (const n of sizes) {
      r.push(stream.subarray(pos, Math.min(stream.length, pos + n)));
      pos = Math.min(stream.length, pos + n);
    }
    if (pos < stream.length) r.push(stream.subarray(pos));
    assert.deepEqual(got, ['a', 'b', 'c'], `chunks ${sizes.join(',')}`);
    assert.equal(r.buffered, 0);
  }
  assert.throws(() => new GrpcMessageReader(() => undefined).push(Buffer.from([1, 0, 0, 0, 0])), (e: unknown) => e instanceof TransshipError && e.code === 'TS_CONTAINERD_PROTOCOL');
});
