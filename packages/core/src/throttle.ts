// A bandwidth cap for byte streams: a token bucket refilled at `bytesPerSecond`, shared by every stream that uses
// the same Throttle so the cap holds for the whole replicator, not per blob.
import { Transform, type TransformCallback } from 'node:stream';

export class Throttle {
  private tokens: number;
  private last = Date.now();

  constructor(readonly bytesPerSecond: number) {
    // One second of burst: enough to keep a pipe busy without exceeding the cap over any longer span.
    this.tokens = bytesPerSecond;
  }

  /** Milliseconds to wait before `n` bytes may pass (and takes them). */
  take(n: number): number {
    const now = Date.now();
    this.tokens = Math.min(this.bytesPerSecond, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.bytesPerSecond) * 1000);
  }

  stream(): Transform {
    let timer: NodeJS.Timeout | undefined;
    return new Transform({
      transform: (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) => {
        const wait = this.take(chunk.length);
        if (wait === 0) cb(null, chunk);
        else
          timer = setTimeout(() => {
            timer = undefined;
            cb(null, chunk);
          }, wait);
      },
      // A cancelled copy must not leave a timer behind.
      destroy: (err, cb) => {
        if (timer) clearTimeout(timer);
        cb(err);
      },
    });
  }
}
