// `mirror:` configuration and upstream selection: strict keys, one password source, names that must be valid
// repository names, and the two ways a request names its upstream (containerd's ?ns= and a path prefix).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../../packages/transship/src/config/config.js';
import { Upstreams, DEFAULT_TAG_TTL_MS, type MirrorConfig } from '../../packages/transship/src/mirror/upstreams.js';

const parse = (mirror: unknown) => configSchema.safeParse({ mirror });
const upstreams = (mirror: unknown, env: NodeJS.ProcessEnv = {}): Upstreams => new Upstreams(configSchema.parse({ mirror }).mirror as MirrorConfig, {}, env);
const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
};

test('config: unknown keys, a missing upstream list, and zero or two password sources are refused', () => {
  assert.equal(parse({ upstreams: [{ registry: 'docker.io', ttl: '5m' }] }).success, false, 'unknown key');
  assert.equal(parse({ upstreams: [] }).success, false, 'no upstream');
  assert.equal(parse({ upstreams: [{ registry: 'docker.io', credentials: { username: 'a' } }] }).success, false, 'no password source');
  assert.equal(parse({ upstreams: [{ registry: 'docker.io', credentials: { username: 'a', password: 'x', passwordEnv: 'Y' } }] }).success, false, 'two sources');
  assert.equal(parse({ upstreams: [{ registry: 'https://docker.io' }] }).success, false, 'a URL is not a registry name');
  assert.equal(parse({ upstreams: [{ registry: 'docker.io', tagTtl: 'soon' }] }).success, false, 'bad duration');
  assert.equal(parse({ upstreams: [{ registry: 'docker.io', url: 'https://registry-1.docker.io', tagTtl: '10m', allowPush: true, repositories: ['library/*'], credentials: { username: 'a', passwordEnv: 'PW' } }] }).success, true);
});

test('config: a prefix that is not a repository name, two upstreams with one registry, an unset passwordEnv → TS_CONFIG_INVALID', async () => {
  assert.equal(codeOf(() => upstreams({ upstreams: [{ registry: 'docker.io', prefix: 'Docker_IO' }] })), 'TS_CONFIG_INVALID');
  assert.equal(codeOf(() => upstreams({ upstreams: [{ registry: 'docker.io' }, { registry: 'DOCKER.io', prefix: 'hub' }] })), 'TS_CONFIG_INVALID');
  assert.equal(codeOf(() => upstreams({ upstreams: [{ registry: 'docker.io', credentials: { username: 'a', passwordEnv: 'NOPE' } }] })), 'TS_CONFIG_INVALID');
  const dir = await mkdtemp(join(tmpdir(), 'ts-mirror-cfg-'));
  try {
    await writeFile(join(dir, 'pw'), 'secret\n');
    assert.equal(codeOf(() => upstreams({ upstreams: [{ registry: 'docker.io', credentials: { username: 'a', passwordFile: join(dir, 'pw') } }] })), undefined);
    assert.equal(codeOf(() => upstreams({ upstreams: [{ registry: 'docker.io', credentials: { username: 'a', passwordFile: join(dir, 'missing') } }] })), 'TS_CONFIG_INVALID');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('selection: ?ns= names the upstream (Docker Hub one-component names are library/), a path prefix works too, both store under <prefix>/<repo>', () => {
  const u = upstreams({ upstreams: [{ registry: 'docker.io' }, { registry: 'registry.example:5000', repositories: ['team/*'] }, { registry: 'ghcr.io', prefix: 'gh' }] });
  assert.equal(u.all[0]?.tagTtlMs, DEFAULT_TAG_TTL_MS);
  assert.deepEqual(pick(u.route('library/alpine', 'docker.io')), { registry: 'docker.io', repo: 'library/alpine', name: 'docker.io/library/alpine' });
  assert.deepEqual(pick(u.route('alpine', 'docker.io')), { registry: 'docker.io', repo: 'library/alpine', name: 'docker.io/library/alpine' });
  assert.deepEqual(pick(u.route('docker.io/library/alpine', null)), { registry: 'docker.io', repo: 'library/alpine', name: 'docker.io/library/alpine' });
  // A port cannot be part of a repository name: the default prefix turns ':' into '-'.
  assert.deepEqual(pick(u.route('team/app', 'registry.example:5000')), { registry: 'registry.example:5000', repo: 'team/app', name: 'registry.example-5000/team/app' });
  assert.deepEqual(pick(u.route('registry.example-5000/team/app', null)), { registry: 'registry.example:5000', repo: 'team/app', name: 'registry.example-5000/team/app' });
  assert.equal(u.route('other/app', 'registry.example:5000'), undefined, 'not in repositories');
  assert.equal(u.route('team/deep/app', 'registry.example:5000'), undefined, '* stays within one component');
  assert.deepEqual(pick(u.route('gh/acme/tool', null)), { registry: 'ghcr.io', repo: 'acme/tool', name: 'gh/acme/tool' });
  assert.equal(u.route('ghcr.io/acme/tool', null), undefined, 'the registry name is not the prefix when one is set');
  assert.equal(u.route('library/alpine', 'quay.io'), undefined, 'ns= of no upstream: the registry’s own namespace');
  assert.equal(u.route('team/app', null), undefined);
});

function pick(r: ReturnType<Upstreams['route']>): { registry: string; repo: string; name: string } | undefined {
  return r ? { registry: r.upstream.registry, repo: r.repo, name: r.name } : undefined;
}
