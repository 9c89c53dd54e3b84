// Lint rules that catch real bugs in async infrastructure code: floating promises above all; and the layer map.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The layer map: dependencies point down.
//
//   cli → server → registry → placement → transfer → store, index → telemetry → core
//   cli → containerd → telemetry → core            (the containerd product shares only core and telemetry)
//
// Each folder of src/ may import itself and the folders listed for it, nothing else; test/ and bench/ may import
// anything. When the tree moves into workspaces, change the keys and values here (and SRC) — the rules below are
// generated from this table.
const SRC = 'src';
const LAYERS = {
  core: [],
  telemetry: ['core'],
  store: ['core', 'telemetry'],
  index: ['core', 'telemetry'],
  transfer: ['core', 'telemetry', 'store', 'index'],
  placement: ['core', 'telemetry', 'store', 'index', 'transfer'],
  registry: ['core', 'telemetry', 'store', 'index', 'transfer', 'placement'],
  server: ['core', 'telemetry', 'store', 'index', 'transfer', 'placement', 'registry'],
  containerd: ['core', 'telemetry'],
  cli: ['core', 'telemetry', 'store', 'index', 'transfer', 'placement', 'registry', 'server', 'containerd'],
};
// Packages that belong to one layer: the HTTP server framework to the HTTP layers, gRPC to containerd, the AWS SDK
// to the S3 store, the command-line parser to the CLI. (Dynamic import() is not checked by the rule; cli/ is the
// only folder that uses it for our own modules.)
const PACKAGES = {
  fastify: ['registry', 'server', 'cli'],
  '@grpc/*': ['containerd'],
  '@aws-sdk/*': ['store'],
  '@smithy/*': ['store'],
  commander: ['cli'],
};
/** Deepest folder nesting under a layer (src/containerd/watch/x.ts is 1); deeper files fail the rule below. */
const MAX_DEPTH = 3;

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
      // Deeper climbs leave src/ altogether.
      patterns.push({ regex: `^${up}\\.\\./`, message: `layer map (eslint.config.js): ${layer}/ imports from outside ${SRC}/` });
      if (packages.length) patterns.push({ group: packages, message: `layer map (eslint.config.js): this package belongs to another layer (see PACKAGES)` });
      // One observed retry: outside core and telemetry, retries go through telemetry/observed-retry.ts so that
      // upload_retry_total and the retry spans cover every remote call.
      if (!['core', 'telemetry'].includes(layer)) {
        patterns.push({ regex: '/core/retry(\\.js)?$', importNames: ['retry'], message: 'use observedRetry (src/telemetry/observed-retry.ts): a bare retry is invisible to upload_retry_total' });
      }
      configs.push({
        files: [`${SRC}/${layer}/${'*/'.repeat(depth)}*.ts`],
        rules: { 'no-restricted-imports': ['error', { patterns }] },
      });
    }
  }
  return configs;
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bin/**', 'scripts/**', 'test/run.mjs', 'eslint.config.js'] },
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
