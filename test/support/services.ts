// Starts the shared test bed for integration tests and hands its coordinates to test files through environment
// variables (each node:test file runs in its own process). Each service installs its Debian packages when missing.
import { startRgw } from './rgw.js';

export interface Started {
  env: Record<string, string>;
  stop: () => Promise<void>;
}

export async function startServices(_files: string[]): Promise<Started> {
  const stops: Array<() => Promise<void>> = [];
  const env: Record<string, string> = {};
  const rgw = await startRgw({ gateways: 3 });
  stops.push(() => rgw.stop());
  Object.assign(env, rgw.env);
  return {
    env,
    stop: async () => {
      for (const s of stops.reverse()) await s().catch((e: unknown) => console.error('stopping test service failed:', e));
    },
  };
}
