// Creates a task without starting it (containerd's Tasks.Create), which ctr cannot do: `ctr task start` creates and
// starts in one go. A task stuck in CREATED used to be made by SIGSTOPping ctr between the two calls, which lost the
// race on a loaded machine (the start went out before the stop: 1 of 3 runs here). The rootfs mounts come from the
// snapshotter, as ctr does. A test-only proto subset, so the product's subset stays what the tools use.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PROTO = `syntax = "proto3";
package tscreate;
message Mount { string type = 1; string source = 2; string target = 3; repeated string options = 4; }
message MountsRequest { string snapshotter = 1; string key = 2; }
message MountsResponse { repeated Mount mounts = 1; }
message CreateTaskRequest { string container_id = 1; repeated Mount rootfs = 3; string stdin = 4; string stdout = 5; string stderr = 6; bool terminal = 7; }
message CreateTaskResponse { string container_id = 1; uint32 pid = 2; }
service Snapshots { rpc Mounts(MountsRequest) returns (MountsResponse); }
service Tasks { rpc Create(CreateTaskRequest) returns (CreateTaskResponse); }
`;

function call<Req, Res>(client: grpc.Client, def: protoLoader.MethodDefinition<Req, Res>, path: string, req: Req, ns: string): Promise<Res> {
  const md = new grpc.Metadata();
  md.set('containerd-namespace', ns);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(path, def.requestSerialize, def.responseDeserialize, req, md, { deadline: Date.now() + 30_000 }, (err, res) => (err || !res ? reject(err ?? new Error('no response')) : resolve(res)));
  });
}

/** Tasks.Create for a container made by `ctr container create` (snapshot key = id, overlayfs); returns the init pid. */
export async function createTask(address: string, namespace: string, id: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'ts-create-proto-'));
  let pkg: protoLoader.PackageDefinition;
  try {
    writeFileSync(join(dir, 'create.proto'), PROTO);
    pkg = protoLoader.loadSync('create.proto', { includeDirs: [dir], keepCase: true, defaults: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const method = <Req, Res>(svc: string, name: string): protoLoader.MethodDefinition<Req, Res> => (pkg[`tscreate.${svc}`] as protoLoader.ServiceDefinition)[name] as unknown as protoLoader.MethodDefinition<Req, Res>;
  const client = new grpc.Client(`unix://${address}`, grpc.credentials.createInsecure());
  try {
    const mounts = await call<object, { mounts: object[] }>(client, method('Snapshots', 'Mounts'), '/containerd.services.snapshots.v1.Snapshots/Mounts', { snapshotter: 'overlayfs', key: id }, namespace);
    const res = await call<object, { pid: number }>(client, method('Tasks', 'Create'), '/containerd.services.tasks.v1.Tasks/Create', { container_id: id, rootfs: mounts.mounts }, namespace);
    return res.pid;
  } finally {
    client.close();
  }
}
