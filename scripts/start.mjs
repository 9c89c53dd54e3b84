#!/usr/bin/env node
// `npm start`: the main job on the embedded default. Starts `transship serve` on the local directory store, pushes
// the example image into it with `transship copy … docker://…`, then keeps serving until Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const listen = process.env.TRANSSHIP_LISTEN ?? '127.0.0.1:5000';
const cli = join(root, 'packages', 'transship', 'dist', 'cli', 'main.js');
// glibc malloc settings for serve, as deploy/ ships them (src/server/malloc.ts).
const mallocEnv = { MALLOC_TRIM_THRESHOLD_: '67108864', MALLOC_MMAP_THRESHOLD_: '4194304' };
const server = spawn(process.execPath, [cli, 'serve', '--listen', listen, ...process.argv.slice(2)], { stdio: 'inherit', env: { ...mallocEnv, ...process.env } });
const stop = () => server.kill('SIGTERM');
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
server.on('exit', (code) => process.exit(code ?? 0));

for (let i = 0; i < 100; i++) {
  const ok = await fetch(`http://${listen}/v2/`).then((r) => r.ok || r.status === 401, () => false);
  if (ok) break;
  await new Promise((r) => setTimeout(r, 100));
}
// The demo image is pushed by transship itself (`copy` writes docker://), so no other tool is needed.
const push = ['copy', '--no-cache', 'oci:' + join(root, 'examples', 'hello') + ':latest', `docker://${listen}/hello:latest`];
console.log(`\n$ transship ${push.join(' ')}`);
const r = spawnSync(process.execPath, [cli, ...push], { stdio: 'inherit' });
console.log(
  r.status === 0
    ? `\npushed hello:latest — look at it with: transship inspect docker://${listen}/hello:latest (or skopeo inspect --tls-verify=false docker://${listen}/hello:latest)\nserving on http://${listen} (Ctrl-C to stop)`
    : '\nthe push failed (see above)',
);
