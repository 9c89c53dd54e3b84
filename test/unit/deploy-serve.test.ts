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
  assert.equal(docs.find((d) => d.kind === 'Service')?.spec?.sessionAffinity, 'ClientIP', 'upload sessions live in one pod');

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
