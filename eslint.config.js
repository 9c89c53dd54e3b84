// Lint rules that catch real bugs in async infrastructure code: floating promises above all; and the layer map.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The layer map: dependencies point down.
//
//   packages/transship:  cli → server → gc, mirror → registry → placement → transfer → store, index → telemetry, config
//   packages/containerd: one layer (doctor, watch)
//   packages/core:       errors, retry, digest, names, limits, log, tracing, metrics factory — below everything
//   cli → @transship/containerd → @transship/core;  every transship layer → @transship/core
//
// Each folder of packages/transship/src may import itself and the folders listed for it; the workspace packages may
// import only the packages below them (by name, never by a relative path out of their src/). test/ and bench/ may
// import anything. The rules below are generated from these tables.
const TRANSSHIP = 'packages/transship/src';
const LAYERS = {
  config: [],
  telemetry: [],
  store: ['config', 'telemetry'],
  index: ['config', 'telemetry'],
  transfer: ['config', 'telemetry', 'store', 'index'],
  placement: ['config', 'telemetry', 'store', 'index', 'transfer'],
  registry: ['config', 'telemetry', 'store', 'index', 'transfer', 'placement'],
  gc: ['config', 'telemetry', 'store', 'index', 'transfer', 'placement', 'registry'],
  // The pull-through mirror implements the registry's MirrorHook (registry/context.ts), so it sits above it.
  mirror: ['config', 'telemetry', 'store', 'index', 'transfer', 'placement', 'registry'],
  server: ['config', 'telemetry', 'store', 'index', 'transfer', 'placement', 'registry', 'gc', 'mirror'],
  cli: ['config', 'telemetry', 'store', 'index', 'transfer', 'placement', 'registry', 'gc', 'mirror', 'server'],
};
// Packages that belong to one layer: the HTTP server framework to the HTTP layers, the AWS SDK to the S3 store, the
// command-line parser to the CLI, the containerd package to the CLI. (Dynamic import() is not checked by the rule;
// cli/ is the only folder that uses it for our own modules.)
const PACKAGES = {
  fastify: ['registry', 'server', 'cli'],
  '@aws-sdk/*': ['store'],
  '@smithy/*': ['store'],
  commander: ['cli'],
  '@transship/containerd': ['cli'],
  '@transship/containerd/*': ['cli'],
  '@grpc/*': [],
};
/** Deepest folder nesting under a layer (transfer/sources/x.ts is 1); deeper files fail the rule below. */
const MAX_DEPTH = 3;
// One observed retry: outside core, retries go through @transship/core/observed-retry so that upload_retry_total and
// the retry spans cover every remote call.
const BARE_RETRY = { name: '@transship/core/retry', importNames: ['retry'], message: 'use observedRetry (@transship/core/observed-retry): a bare retry is invisible to upload_retry_total' };

function layerRules() {
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const configs = [];
  for (const [layer, allowed] of Object.entries(LAYERS)) {
    const forbidden = Object.keys(LAYERS).filter((l) => l !== layer && !allowed.includes(l));
    const packages = Object.entries(PACKAGES).filter(([, owners]) => !owners.includes(layer)).map(([name]) => name);
    for (let depth = 0; depth <= MAX_DEPTH; depth++) {
      // A relative import climbs out of the file's own layer with depth+1 `../`; what follows names the layer.
      const up = '\\.\\./'.repeat(depth + 1);
      const patterns = [];
      if (forbidden.length) {
        patterns.push({
          regex: `^${up}(${forbidden.map(escape).join('|')})(/|$)`,
          message: `layer map (eslint.config.js): ${layer}/ may import only ${allowed.join(', ') || 'nothing outside itself'}`,
        });
      }
      // Deeper climbs leave the package's src/ altogether.
      patterns.push({ regex: `^${up}\\.\\./`, message: `layer map (eslint.config.js): ${layer}/ imports from outside ${TRANSSHIP}/` });
      if (packages.length) patterns.push({ group: packages, message: 'layer map (eslint.config.js): this package belongs to another layer (see PACKAGES)' });
      configs.push({
        files: [`${TRANSSHIP}/${layer}/${'*/'.repeat(depth)}*.ts`],
        rules: { 'no-restricted-imports': ['error', { paths: [BARE_RETRY], patterns }] },
      });
    }
  }
  // The shared core imports no other workspace package; containerd imports only core; neither climbs out of src/.
  const outside = { regex: '(^|/)(core|containerd|transship)/(src|dist)/', message: 'layer map (eslint.config.js): a workspace package imports others by name, never by a relative path' };
  configs.push({
    files: ['packages/core/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [outside, { group: ['@transship/*', 'transship', 'transship/*'], message: 'layer map (eslint.config.js): core is below every other package' }] }] },
  });
  configs.push({
    files: ['packages/containerd/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: [BARE_RETRY], patterns: [outside, { group: ['transship', 'transship/*'], message: 'layer map (eslint.config.js): containerd imports only @transship/core' }] }] },
  });
  return configs;
}

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'tools/**', 'scripts/**', 'test/run.mjs', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', name: ['test', 'it', 'describe', 'suite'], package: 'node:test' }] }],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
    },
  },
  ...layerRules(),
);
