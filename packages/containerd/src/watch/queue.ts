// The bounded queue between event intake (the gRPC stream, which must never be blocked: containerd drops a slow
// subscriber's events on its side anyway) and the lifecycle processor/exporter. Why bounded and dropping: a watcher
// that buffers without limit turns an event storm or a stalled exporter into an OOM kill of the watcher itself.
// A dropped event is counted and the caller schedules a reconcile with the API, which repairs the lifecycle state
// (only the dropped transition's exact timestamp is lost).
//
// A ring buffer, so push and shift are O(1) at any depth.
import { throwIfAborted } from '@transship/core/errors';

export class BoundedQueue<T> {
  private readonly items: Array<T | undefined>;
  private head = 0;
  private length = 0;
  private waiter: (() => void) | undefined;
  private woken = false;
  /** Deepest the queue has been since creation. */
  highWater = 0;
  dropped = 0;

  constructor(
    readonly capacity: number,
    private readonly onDrop?: (item: T) => void,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity must be an integer ≥ 1, got ${capacity}`);
    this.items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.length;
  }

  /** Adds an item; returns false (and counts a drop) when full. Never blocks. */
  push(item: T): boolean {
    if (this.length === this.capacity) {
      this.dropped++;
      this.onDrop?.(item);
      return false;
    }
    this.items[(this.head + this.length) % this.capacity] = item;
    this.length++;
    if (this.length > this.highWater) this.highWater = this.length;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
    return true;
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined; // let the GC have it
    this.head = (this.head + 1) % this.capacity;
    this.length--;
    return item;
  }

  /**
   * Resolves when an item is waiting or `wake()` was called (the processor also has timed work to do); rejects
   * with TS_CANCELLED when the signal fires. One consumer.
   */
  async wait(signal: AbortSignal): Promise<void> {
    throwIfAborted(signal);
    if (this.length > 0 || this.woken) {
      this.woken = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const onAbort = (): void => {
        this.waiter = undefined;
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiter = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
    });
    this.woken = false;
    throwIfAborted(signal);
  }

  /** Lets a waiting consumer run even though no item arrived. */
  wake(): void {
    this.woken = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}
