// deploy/ for `transship serve` stays true to the code: the alert rules only name metrics the registry really has,
// the systemd unit and the Kubernetes manifests pass only flags `serve` accepts, and the configuration the
// ConfigMap ships passes the same validation a real start does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import '../../packages/transship/src/telemetry/metrics.js';
import '@transship/core/retry-metrics';
import { processMetrics } from '@transship/core/metrics-registry';

const registry = processMetrics();
import { registerServe } from '../../packages/transship/src/cli/serve.js';
import { loadConfig } from '../../packages/transship/src/config/config.js';

const deploy = (p: string): string => readFileSync(fileURLToPath(new URL(`../../deploy/${p}`, import.meta.url)), 'utf8');

function serveOptions(): Set<string> {
  const program = new Command('transship');
  registerServe(program);
  const serve = program.commands.find((c) => c.name() === 'serve');
  assert.ok(serve);
  return new Set(serve.options.map((o) => o.long ?? ''));
}

test('serve alert rules parse and every metric they use exists in the registry', () => {
  const doc = parseYaml(deploy('prometheus/transship-serve-alerts.yaml')) as { groups: Array<{ rules: Array<{ alert: string; expr: string; labels: { severity: string } }> }> };
  const rules = doc.groups.flatMap((g) => g.rules);
  assert.ok(rules.length >= 5);
  for (const r of rules) {
    assert.ok(['critical', 'warning', 'info'].includes(r.labels.severity), `${r.alert}: severity`);
    const names = (r.expr.match(/\b(?:registry|s3|upload_retry|multipart|gc)_[a-z0-9_]+/g) ?? []).map((n) => (registry.getSingleMetric(n) ? n : n.replace(/_(bucket|count|sum)$/, '')));
    assert.ok(names.length > 0, `${r.alert}: names no transship metric`);
    for (const n of names) assert.ok(registry.getSingleMetric(n), `${r.alert}: "${n}" is not in the registry`);
  }
});

test('serve systemd unit and Deployment pass only flags `transship serve` accepts; the shipped config validates', async () => {
  const known = serveOptions();
  const exec = /^ExecStart=(.*)$/m.exec(deploy('systemd/transship-serve.service'))?.[1] ?? '';
  assert.match(exec, /transship serve /);
  for (const f of exec.match(/--[a-z-]+/g) ?? []) assert.ok(known.has(f), `unit flag ${f}`);

  type Doc = { kind: string; data?: Record<string, string>; spec?: { sessionAffinity?: string; template: { spec: { containers: Array<{ args: string[]; readinessProbe: { httpGet: { path: string } }; livenessProbe: { httpGet: { path: string } } }> } } } };
  const docs = parseAllDocuments(deploy('kubernetes/transship-serve.yaml')).map((d) => d.toJS() as Doc);
  const container = docs.find((d) => d.kind === 'Deployment')?.spec?.template.spec.containers[0];
  assert.ok(container);
  assert.equal(container.args[0], 'serve');
  for (const a of container.args.slice(1).filter((x) => x.startsWith('--'))) assert.ok(known.has(a.split('=')[0] ?? ''), `Deployment flag ${a}`);
  assert.deepEqual([container.readinessProbe.httpGet.path, container.livenessProbe.httpGet.path], ['/readyz', '/healthz']);
  assert.equal(docs.find((d) => d.kind === 'Service')?.spec?.sessionAffinity, undefined, 'upload sessions continue on any pod: no affinity');

  const yaml = docs.find((d) => d.kind === 'ConfigMap')?.data?.['transship.yaml'];
  assert.ok(yaml);
  const dir = await mkdtemp(join(tmpdir(), 'transship-deploy-'));
  try {
    await writeFile(join(dir, 'transship.yaml'), yaml);
    const config = loadConfig({ file: join(dir, 'transship.yaml'), env: {} });
    assert.equal(config.serve?.listen, '0.0.0.0:5000');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Metric names a PromQL expression reads: identifiers outside label matchers, grouping clauses and function calls. */
function metricsRead(expr: string): string[] {
  const bare = expr
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // range selectors
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/"[^"]*"/g, ' ');
  const names: string[] = [];
  for (const [, name = '', call] of bare.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)/g)) {
    if (!call && !/^(?:and|or|unless|bool|offset|e|Inf|NaN)$/.test(name)) names.push(name);
  }
  return names;
}

test('serve dashboard: valid JSON, and every query names only metrics a running `transship serve` exports', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'transship-dash-'));
  const { spawnServe } = await import('../support/registry.js');
  const serve = await spawnServe(['--store', `dir:${dir}`]);
  let exported: Set<string>;
  try {
    const text = await (await fetch(`${serve.url}/metrics`)).text();
    exported = new Set();
    for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      const [, name = '', type] = m;
      exported.add(name);
      if (type === 'histogram') for (const s of ['_bucket', '_count', '_sum']) exported.add(name + s);
      if (type === 'summary') for (const s of ['_count', '_sum']) exported.add(name + s);
    }
  } finally {
    await serve.stop();
    await rm(dir, { recursive: true, force: true });
  }
  assert.ok(exported.has('process_resident_memory_bytes'), 'serve exports process metrics (memory)');

  type Panel = { title: string; type: string; targets?: Array<{ expr: string }> };
  const dash = JSON.parse(deploy('grafana/transship-serve-dashboard.json')) as { uid: string; panels: Panel[]; templating: { list: Array<{ query: unknown }> } };
  assert.equal(dash.uid, 'transship-serve');
  const queries = dash.panels.filter((p) => p.type !== 'row').flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr })));
  for (const q of dash.templating.list) if (typeof q.query === 'string' && q.query.startsWith('label_values(')) queries.push({ where: 'templating', expr: q.query.replace(/^label_values\(|,[^,]*\)$/g, '') });
  assert.ok(queries.length >= 20);
  const read = new Set<string>();
  for (const q of queries) {
    const names = metricsRead(q.expr);
    assert.ok(names.length > 0, `${q.where}: "${q.expr}" reads no metric`);
    for (const n of names) {
      assert.ok(exported.has(n), `${q.where}: "${n}" is not exported by serve (expr: ${q.expr})`);
      read.add(n.replace(/_(bucket|count|sum)$/, ''));
    }
  }
  // What issue 17 asks the dashboard to show.
  for (const m of ['registry_requests_total', 'registry_request_duration_seconds', 's3_put_skipped_due_to_dedup', 'registry_blob_cache_requests_total', 'blob_hit_ratio_local_vs_remote', 'cross_region_upload_bytes_total', 'upload_retry_total', 'registry_upload_sessions', 's3_requests_total', 'process_resident_memory_bytes']) {
    assert.ok(read.has(m), `the dashboard charts ${m}`);
  }
  // Garbage collection and the pull-through mirror get rows once their metrics ship: a new gc_*/mirror_* series
  // that no panel reads fails here, so the dashboard cannot silently fall behind.
  for (const n of exported) if (/^(?:gc|mirror)_/.test(n) && !/_(bucket|count|sum)$/.test(n)) assert.ok(read.has(n), `no panel reads ${n}`);
});
