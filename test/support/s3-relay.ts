// Design note: the benchmarks' S3 request counter. s3-proxy.ts re-parses and re-sends every request and response
// through node:http, which is what fault injection needs, but it makes the instrument expensive where the
// benchmarks run: ~1 s of CPU per 256 MiB relayed on a 2-core VM where the registries being compared, skopeo and
// RGW compete for the same cores, so the counter itself slowed whichever contender was CPU-bound. A framing-only
// relay in Node (tried first) saved only about a quarter: every 64 KiB piece still cost a read and a write system
// call, which is most of the price here. So the relay is s3-relay.py: it parses heads and moves body bytes with
// splice(2), 1 MiB per call, without copying them through user space: 256 MiB in 8 MiB PUTs over loopback cost
// it 0.25-0.33 s of CPU against 0.7-0.9 s for s3-proxy.ts. This module starts it and turns the lines
// it prints into the same counts and log as s3-proxy.ts (tests run both through the same checks). No faults: tests
// that inject failures use s3-proxy.ts.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { classifyS3Operation, type ProxyCounts, type ProxyLogEntry, type S3Proxy } from './s3-proxy.js';

const SCRIPT = fileURLToPath(new URL('./s3-relay.py', import.meta.url));

type Line =
  | { t: 'listening'; port: number }
  | { t: 'req'; id: number; method: string; url: string; copy: boolean }
  | { t: 'res'; id: number; status: number }
  | { t: 'sync'; n: number };

export interface S3Relay extends S3Proxy {
  /** Resolves once every request the relay saw so far is in `log` and `counts()`. */
  settle(): Promise<void>;
  /** The relay process (its CPU is the instrument's cost). */
  pid: number | undefined;
}

export async function startS3Relay(opts: { target: string }): Promise<S3Relay> {
  const target = new URL(opts.target);
  if (target.protocol !== 'http:') throw new TypeError(`startS3Relay: target must be an http:// URL, got ${opts.target}`);
  const child = spawn('python3', [SCRIPT, target.hostname, target.port || '80'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const log: ProxyLogEntry[] = [];
  let counts: ProxyCounts = { total: 0, byOperation: {}, faulted: 0, faultedByKind: {} };
  const open = new Map<number, ProxyLogEntry>();
  const syncs = new Map<number, () => void>();
  let syncNo = 0;
  let port: number | undefined;
  const listening = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`s3-relay.py exited with ${String(code)} before listening`)));
    createInterface({ input: child.stdout }).on('line', (text) => {
      const line = JSON.parse(text) as Line;
      switch (line.t) {
        case 'listening':
          port = line.port;
          resolve(line.port);
          return;
        case 'req': {
          const q = line.url.indexOf('?');
          const path = q < 0 ? line.url : line.url.slice(0, q);
          const query = q < 0 ? '' : line.url.slice(q + 1);
          const operation = classifyS3Operation(line.method, path, new URLSearchParams(query), line.copy ? { 'x-amz-copy-source': '-' } : {});
          const entry: ProxyLogEntry = { method: line.method, path, query, operation, status: 0 };
          open.set(line.id, entry);
          log.push(entry);
          counts.total++;
          counts.byOperation[operation] = (counts.byOperation[operation] ?? 0) + 1;
          return;
        }
        case 'res': {
          const entry = open.get(line.id);
          open.delete(line.id);
          if (entry) entry.status = line.status;
          return;
        }
        case 'sync':
          syncs.get(line.n)?.();
          syncs.delete(line.n);
          return;
      }
    });
  });
  await listening;
  return {
    url: `http://127.0.0.1:${String(port)}`,
    pid: child.pid,
    log,
    counts: () => ({ total: counts.total, byOperation: { ...counts.byOperation }, faulted: 0, faultedByKind: {} }),
    reset: () => {
      counts = { total: 0, byOperation: {}, faulted: 0, faultedByKind: {} };
      log.length = 0;
    },
    setFaults: (f) => {
      if (f !== undefined) throw new Error('startS3Relay counts only; use startS3Proxy to inject faults');
    },
    settle: async () => {
      const n = ++syncNo;
      const done = new Promise<void>((resolve) => syncs.set(n, resolve));
      child.stdin.write(`sync ${n}\n`);
      await done;
    },
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.stdin.end(); // the relay exits when its stdin closes
      await exited;
    },
  };
}
