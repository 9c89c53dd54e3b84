// HOST:PORT parsing for listeners, in a module of its own so a command can use it without loading `serve` (which
// pulls in fastify and the AWS SDK: ~40 MB a node agent like `watch` should not pay). Used by `serve` and `watch`.
import { TransshipError } from '@transship/core/errors';

export function parseHostPort(value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || !Number.isInteger(port) || port > 65535) {
    throw new TransshipError('TS_USAGE', `invalid ${flag} "${value}": expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080`);
  }
  return { host: host || '0.0.0.0', port };
}
