// What every cancellable call takes: an optional AbortSignal in its options object. It lives in core because every
// layer — stores, sources, placement, the registry, containerd — passes it down; the store contract re-exports it.
// Checking the signal is `throwIfAborted` (src/core/errors.ts), which turns a fired signal into TS_CANCELLED.
export interface Signalled {
  signal?: AbortSignal | undefined;
}
