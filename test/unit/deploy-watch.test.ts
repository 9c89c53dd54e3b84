// deploy/ for `transship watch` stays true to the code: the alert rules and the dashboard only name metrics the
// registry really has (a renamed metric would silently blank a panel or never fire an alert), the YAML and JSON
// parse, and the systemd unit and DaemonSet only pass flags the `watch` command accepts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import '@transship/containerd/metrics';
import '@transship/core/retry-metrics';
import { processMetrics } from '@transship/core/metrics-registry';

const registry = processMetrics();
import { registerWatch } from '../../packages/transship/src/cli/watch.js';

const deploy = (p: string): string => readFileSync(fileURLToPath(new URL(`../../deploy/${p}`, import.meta.url)), 'utf8');

/** Metric names in a PromQL expression (histogram series suffixes folded onto their histogram). */
function metricsIn(expr: string): string[] {
  const names = expr.match(/\bcontainerd_[a-z0-9_]+/g) ?? [];
  return names.map((n) => (registry.getSingleMetric(n) ? n : n.replace(/_(bucket|count|sum)$/, '')));
}

function assertKnown(exprs: string[], where: string): void {
  assert.ok(exprs.length > 0, `${where}: no expressions found`);
  for (const e of exprs) {
    const names = metricsIn(e);
    assert.ok(names.length > 0, `${where}: "${e}" names no containerd metric`);
    for (const n of names) assert.ok(registry.getSingleMetric(n), `${where}: "${n}" is not in the registry (expr: ${e})`);
  }
}

test('alert rules parse and every metric they use exists in the registry', () => {
  const doc = parseYaml(deploy('prometheus/transship-watch-alerts.yaml')) as { groups: Array<{ rules: Array<{ alert: string; expr: string; labels: { severity: string } }> }> };
  const rules = doc.groups.flatMap((g) => g.rules);
  assert.ok(rules.length >= 6);
  for (const r of rules) assert.ok(['critical', 'warning', 'info'].includes(r.labels.severity), `${r.alert}: severity`);
  assertKnown(rules.map((r) => r.expr), 'alerts');
  // The metrics each have an alert.
  const all = rules.map((r) => r.expr).join('\n');
  for (const m of ['containerd_watch_leaks_total', 'containerd_watch_unexpected_shim_exits_total', 'containerd_watch_tasks_stuck_created', 'containerd_watch_oom_kills_total', 'containerd_watch_phase_duration_seconds']) assert.ok(all.includes(m), m);
});

test('Grafana dashboard is valid JSON and every panel query names registered metrics', () => {
  const dash = JSON.parse(deploy('grafana/transship-watch-dashboard.json')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }>; templating: { list: Array<{ query: unknown }> } };
  assert.ok(dash.panels.length >= 8);
  for (const p of dash.panels) assertKnown(p.targets.map((t) => t.expr), `panel "${p.title}"`);
  assertKnown(dash.templating.list.map((v) => v.query).filter((q): q is string => typeof q === 'string' && q.includes('containerd_')), 'templating');
});

function watchOptions(): Set<string> {
  const program = new Command('transship');
  registerWatch(program);
  const watch = program.commands.find((c) => c.name() === 'watch');
  assert.ok(watch);
  return new Set(watch.options.map((o) => o.long ?? ''));
}

test('systemd unit and DaemonSet pass only flags `transship watch` accepts', () => {
  const known = watchOptions();
  const unit = deploy('systemd/transship-watch.service');
  const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
  assert.match(exec, /transship watch /);
  const unitFlags = exec.match(/--[a-z-]+/g) ?? [];
  assert.ok(unitFlags.length >= 3);
  for (const f of unitFlags) assert.ok(known.has(f), `unit flag ${f}`);
  const docs = parseAllDocuments(deploy('kubernetes/transship-watch-daemonset.yaml')).map((d) => d.toJS() as { kind: string; spec?: { template: { spec: { hostPID: boolean; hostNetwork: boolean; containers: Array<{ args: string[] }> } } } });
  const ds = docs.find((d) => d.kind === 'DaemonSet');
  assert.ok(ds?.spec);
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostPID, true, 'shim and init pids are host pids');
  assert.equal(pod.hostNetwork, true, '/proc/net/unix is per network namespace');
  const args = pod.containers[0]?.args ?? [];
  assert.equal(args[0], 'watch');
  for (const a of args.slice(1)) assert.ok(known.has(a.split('=')[0] ?? ''), `DaemonSet flag ${a}`);
});
