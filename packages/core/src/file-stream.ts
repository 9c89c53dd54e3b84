// A file's bytes as a stream that a consumer may also read positionally, straight into its own buffers.
//
// Why: a stream hands out a fresh 64 KiB Buffer per read. A 1 GiB upload that copies them into 8 MiB part buffers
// leaves 16,384 of them for V8 to collect, and V8 collects memory held outside its heap late, so they float as tens of
// MB of extra RSS (and GC work). A consumer that knows it is reading a file (S3 multipart uploads) reads into its part
// buffers instead and never starts the stream. Everyone else just consumes the stream.
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';

const kFile = Symbol('transship.positionalFile');

/** Where a file stream's bytes are: `length` bytes of `handle` from `start` (all of the rest when undefined). */
export interface PositionalFile {
  handle: FileHandle;
  start: number;
  length: number | undefined;
}

/** Read size for files served whole to a socket (a blob GET): see fileStream. */
export const SERVING_CHUNK_BYTES = 1024 * 1024;

/**
 * `handle.createReadStream` (closing the handle when the stream ends or is destroyed), readable positionally too.
 * `chunkBytes` (default: Node's 64 KiB) sets the read size: a server sending a whole file to a socket spends about
 * half the CPU with 1 MiB reads (one thread-pool trip and one socket write per MiB instead of per 64 KiB).
 */
export function fileStream(handle: FileHandle, range?: { start: number; end: number }, signal?: AbortSignal, chunkBytes?: number): Readable {
  const stream = handle.createReadStream({
    autoClose: true,
    ...(range ? { start: range.start, end: range.end } : {}),
    ...(signal ? { signal } : {}),
    ...(chunkBytes ? { highWaterMark: chunkBytes } : {}),
  });
  const file: PositionalFile = { handle, start: range?.start ?? 0, length: range ? range.end - range.start + 1 : undefined };
  Object.defineProperty(stream, kFile, { value: file });
  return stream;
}

/**
 * The file behind `stream`, when it came from fileStream() and nobody read from it yet. The caller then owns the
 * reading; it must still destroy the stream when done (that closes the file).
 */
export function positionalFile(stream: Readable): PositionalFile | undefined {
  const file = (stream as Readable & { [kFile]?: PositionalFile })[kFile];
  if (!file || stream.readableFlowing !== null || stream.readableDidRead || stream.destroyed) return undefined;
  return file;
}
