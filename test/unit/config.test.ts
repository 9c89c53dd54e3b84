// Configuration layers (file < env < flags) and the precision of validation messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../packages/transship/src/config/config.js';
import { isTransshipError } from '@transship/core/errors';

async function file(text: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ts-cfg-'));
  const p = join(d, 'c.yaml');
  await writeFile(p, text);
  return p;
}

test('config: file < environment < flags', async () => {
  const p = await file('store: dir:/a\nconcurrency: 2\ns3:\n  endpoint: http://127.0.0.1:1\n  region: eu-west-1\n');
  const c = loadConfig({ file: p, env: { AWS_REGION: 'us-east-2', TRANSSHIP_STORE: 'dir:/b' }, flags: { concurrency: 8 } });
  assert.equal(c.store, 'dir:/b');
  assert.equal(c.concurrency, 8);
  assert.equal(c.s3?.region, 'us-east-2');
  assert.equal(c.s3?.endpoint, 'http://127.0.0.1:1');
});

test('config: AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL', () => {
  const c = loadConfig({ env: { AWS_ENDPOINT_URL: 'http://a:1', AWS_ENDPOINT_URL_S3: 'http://b:2' } });
  assert.equal(c.s3?.endpoint, 'http://b:2');
});

test('config: errors name the field and the file', async () => {
  const p = await file('concurrency: -1\n');
  assert.throws(() => loadConfig({ file: p, env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && e.message.includes(p) && e.message.includes('concurrency'));
  const q = await file('s3:\n  partSize: 1024\n');
  assert.throws(() => loadConfig({ file: q, env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /s3\.partSize: partSize must be at least 5 MiB/.test(e.message));
  const st = await file('serve:\n  streamUploadsAfterBytes: -1\n');
  assert.throws(() => loadConfig({ file: st, env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /serve\.streamUploadsAfterBytes/.test(e.message));
  assert.equal(loadConfig({ file: await file('serve:\n  streamUploadsAfterBytes: 0\n'), env: {} }).serve?.streamUploadsAfterBytes, 0, '0 turns streaming off');
  const r = await file('stroe: dir:/x\n');
  assert.throws(() => loadConfig({ file: r, env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /stroe/.test(e.message), 'unknown keys are typos, not ignored');
  const y = await file('store: [unclosed\n');
  assert.throws(() => loadConfig({ file: y, env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /not valid YAML/.test(e.message));
  assert.throws(() => loadConfig({ file: '/nonexistent/c.yaml', env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /cannot read/.test(e.message));
  assert.throws(() => loadConfig({ env: { TRANSSHIP_CONCURRENCY: 'lots' } }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /TRANSSHIP_CONCURRENCY/.test(e.message));
});

test('config: home region must be one of the configured regions', async () => {
  const p = await file('region: mars\nregions:\n  eu:\n    store: s3://bucket-eu\n');
  assert.throws(() => loadConfig({ file: p, env: {} }), (e) => isTransshipError(e, 'TS_CONFIG_INVALID') && /home region "mars"/.test(e.message));
});
