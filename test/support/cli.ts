// The real `transship` binary as users run it: the compiled CLI that `npm ci`/`npm run build` produce
// (package `transship`, bin → dist/cli/main.js). test/run.mjs builds before any test runs, so tests never see a
// stale build, and there is one production code path — the one that ships.
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = fileURLToPath(new URL('../../packages/transship/dist/cli/main.js', import.meta.url));
