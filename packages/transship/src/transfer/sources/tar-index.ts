// Random access into a tar file without extracting it: one pass over the headers records where each entry's bytes
// are, then entries are served as byte ranges of the file. Nothing is ever written to a path derived from an
// entry name, so a hostile archive has nothing to escape into; still, an archive whose names try (`..`, absolute
// paths, links pointing outside) is rejected as a whole with TS_ARCHIVE_UNSAFE_PATH, because no honest image
// archive contains one.
//
// Why our own header reader rather than tar-stream's extract: extract gives no offsets (we would have to stream
// every blob through it on every read), and a header pass only reads 512 bytes per entry, so indexing a multi-GB
// archive costs milliseconds. The format subset is what image tools write: ustar (with prefix), pax extended
// headers (path, linkpath, size), GNU long names, base-256 sizes. Links are recorded but never followed: opening a
// link fails with TS_ARCHIVE_UNSAFE_PATH. A gzip-compressed archive (`docker save | gzip`) is first decompressed
// to a private temp file, because gzip has no random access.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open as fsOpen, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { fromFsError, isTransshipError, throwIfAborted, TransshipError } from '@transship/core/errors';
import { fileStream } from '@transship/core/file-stream';

const BLOCK = 512;
const MAX_ENTRIES = 1_000_000;
const MAX_EXTENDED_HEADER = 1024 * 1024;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarEntryInfo {
  /** Normalized: no leading `./` or `/`, no `.` components, no trailing `/`. */
  name: string;
  type: TarEntryType;
  /** Byte offset of the entry's data in the (decompressed) tar file. */
  offset: number;
  size: number;
  linkname?: string | undefined;
}

function invalid(file: string, why: string, offset: number): TransshipError {
  return new TransshipError('TS_ARCHIVE_INVALID', `${file}: truncated or malformed tar (${why} at offset ${offset})`, { details: { path: file, offset } });
}

function unsafe(file: string, name: string, why: string): TransshipError {
  return new TransshipError('TS_ARCHIVE_UNSAFE_PATH', `${file}: entry "${name.slice(0, 200)}" ${why}; refusing the archive`, { details: { path: file, entry: name.slice(0, 200) } });
}

/** Normalizes an entry name; throws on names that could escape a root. Returns '' for the root itself. */
export function normalizeEntryName(file: string, raw: string): string {
  if (raw.includes('\0')) throw unsafe(file, raw, 'contains a NUL byte');
  if (raw.startsWith('/')) throw unsafe(file, raw, 'is an absolute path');
  const parts: string[] = [];
  for (const c of raw.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw unsafe(file, raw, 'contains ".."');
    parts.push(c);
  }
  return parts.join('/');
}

function readString(buf: Buffer, start: number, len: number): string {
  const field = buf.subarray(start, start + len);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? len : nul).toString('utf8');
}

function readNumber(buf: Buffer, start: number, len: number): number | undefined {
  const first = buf[start] ?? 0;
  if (first & 0x80) {
    // GNU base-256: big-endian two's complement; negative sizes are nonsense for us.
    if (first & 0x40) return undefined;
    let v = first & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + (buf[start + i] ?? 0);
    return Number.isSafeInteger(v) ? v : undefined;
  }
  const s = readString(buf, start, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return undefined;
  return parseInt(s, 8);
}

function checksumOk(header: Buffer): boolean {
  const stored = readNumber(header, 148, 8);
  if (stored === undefined) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
  return sum === stored;
}

function parsePax(data: Buffer, file: string, offset: number): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw invalid(file, 'malformed pax record', offset);
    const len = Number(data.subarray(pos, space).toString('ascii'));
    if (!Number.isSafeInteger(len) || len <= space - pos || pos + len > data.length) throw invalid(file, 'malformed pax record length', offset);
    const record = data.subarray(space + 1, pos + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq === -1) throw invalid(file, 'malformed pax record', offset);
    out.set(record.slice(0, eq), record.slice(eq + 1));
    pos += len;
  }
  return out;
}

function isGzip(b: Buffer): boolean {
  return b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
}

/** Resolves `link` against `base` components; undefined when a `..` climbs above the root. */
function resolveInside(base: string[], link: string): string | undefined {
  const parts = [...base];
  for (const c of link.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
    } else {
      parts.push(c);
    }
  }
  return parts.join('/');
}

export class TarIndex {
  private constructor(
    /** The archive as given (for messages). */
    readonly file: string,
    /** The tar actually read (a temp file when the archive was gzip-compressed). */
    private readonly tarPath: string,
    private readonly entries: Map<string, TarEntryInfo>,
    private readonly tempDir: string | undefined,
  ) {}

  /** Indexes `file`; TS_NOT_FOUND / TS_PERMISSION_DENIED / TS_ARCHIVE_INVALID / TS_ARCHIVE_UNSAFE_PATH. */
  static async open(file: string, opts: { signal?: AbortSignal | undefined } = {}): Promise<TarIndex> {
    throwIfAborted(opts.signal);
    let handle: FileHandle;
    try {
      handle = await fsOpen(file, 'r');
    } catch (err) {
      throw fromFsError(err, file);
    }
    let tempDir: string | undefined;
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new TransshipError('TS_ARCHIVE_INVALID', `${file} is not a regular file`, { details: { path: file } });
      const magic = Buffer.alloc(2);
      await handle.read(magic, 0, 2, 0);
      let tarPath = file;
      if (isGzip(magic)) {
        await handle.close();
        tempDir = await mkdtemp(join(tmpdir(), 'transship-archive-'));
        tarPath = join(tempDir, 'archive.tar');
        try {
          await pipeline(createReadStream(file), createGunzip(), createWriteStream(tarPath, { flags: 'wx' }), opts.signal ? { signal: opts.signal } : {});
        } catch (err) {
          throwIfAborted(opts.signal);
          throw new TransshipError('TS_ARCHIVE_INVALID', `${file}: corrupt gzip stream: ${(err as Error).message}`, { cause: err, details: { path: file } });
        }
        handle = await fsOpen(tarPath, 'r');
      }
      const entries = await scan(handle, file, opts.signal);
      await handle.close();
      return new TarIndex(file, tarPath, entries, tempDir);
    } catch (err) {
      await handle.close().catch(() => undefined);
      if (tempDir) await rm(tempDir, { recursive: true, force: true });
      throw isTransshipError(err) ? err : fromFsError(err, file);
    }
  }

  get(name: string): TarEntryInfo | undefined {
    return this.entries.get(name);
  }

  list(): IterableIterator<TarEntryInfo> {
    return this.entries.values();
  }

  /** Streams a regular file entry. TS_NOT_FOUND when absent; TS_ARCHIVE_UNSAFE_PATH for links (never followed). */
  async open(name: string, signal?: AbortSignal): Promise<Readable> {
    throwIfAborted(signal);
    const entry = this.entries.get(name);
    if (entry === undefined) throw new TransshipError('TS_NOT_FOUND', `${this.file}: no entry ${name}`, { details: { path: this.file, entry: name } });
    if (entry.type === 'symlink' || entry.type === 'hardlink') throw unsafe(this.file, name, `is a ${entry.type} (links in archives are never followed)`);
    if (entry.type !== 'file') throw new TransshipError('TS_ARCHIVE_INVALID', `${this.file}: entry ${name} is not a regular file`, { details: { path: this.file, entry: name } });
    if (entry.size === 0) return Readable.from([]);
    let handle: FileHandle;
    try {
      handle = await fsOpen(this.tarPath, 'r');
    } catch (err) {
      throw fromFsError(err, this.file);
    }
    return fileStream(handle, { start: entry.offset, end: entry.offset + entry.size - 1 });
  }

  /** The first `n` bytes of a regular file entry (fewer when it is shorter): content sniffing without a stream. */
  async head(name: string, n: number): Promise<Buffer> {
    const entry = this.entries.get(name);
    if (entry === undefined || entry.type !== 'file') return Buffer.alloc(0);
    const want = Math.min(n, entry.size);
    const buf = Buffer.alloc(want);
    let handle: FileHandle;
    try {
      handle = await fsOpen(this.tarPath, 'r');
    } catch (err) {
      throw fromFsError(err, this.file);
    }
    try {
      const { bytesRead } = await handle.read(buf, 0, want, entry.offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async close(): Promise<void> {
    if (this.tempDir) await rm(this.tempDir, { recursive: true, force: true });
  }
}

async function scan(handle: FileHandle, file: string, signal?: AbortSignal): Promise<Map<string, TarEntryInfo>> {
  const { size: fileSize } = await handle.stat();
  const entries = new Map<string, TarEntryInfo>();
  const header = Buffer.alloc(BLOCK);
  let pos = 0;
  let paxPath: string | undefined;
  let paxLink: string | undefined;
  let paxSize: number | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  let count = 0;
  const readData = async (offset: number, size: number): Promise<Buffer> => {
    if (size > MAX_EXTENDED_HEADER) throw invalid(file, `extended header of ${size} bytes`, offset);
    const buf = Buffer.alloc(size);
    const { bytesRead } = await handle.read(buf, 0, size, offset);
    if (bytesRead !== size) throw invalid(file, 'truncated extended header', offset);
    return buf;
  };
  for (;;) {
    throwIfAborted(signal);
    if (pos + BLOCK > fileSize) throw invalid(file, pos === fileSize ? 'no end-of-archive marker' : 'truncated header', pos);
    const { bytesRead } = await handle.read(header, 0, BLOCK, pos);
    if (bytesRead !== BLOCK) throw invalid(file, 'truncated header', pos);
    if (header.every((b) => b === 0)) break;
    if (!checksumOk(header)) throw invalid(file, 'bad header checksum', pos);
    if (++count > MAX_ENTRIES) throw invalid(file, `more than ${MAX_ENTRIES} entries`, pos);
    const typeflag = String.fromCharCode(header[156] ?? 0);
    const headerOnly = '123456'.includes(typeflag);
    let size = readNumber(header, 124, 12);
    if (size === undefined) throw invalid(file, 'bad size field', pos);
    const dataStart = pos + BLOCK;
    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      if (dataStart + size > fileSize) throw invalid(file, 'truncated entry', pos);
      const data = await readData(dataStart, size);
      if (typeflag === 'x') {
        const pax = parsePax(data, file, pos);
        paxPath = pax.get('path') ?? paxPath;
        paxLink = pax.get('linkpath') ?? paxLink;
        const s = pax.get('size');
        if (s !== undefined) {
          if (!/^[0-9]+$/.test(s) || !Number.isSafeInteger(Number(s))) throw invalid(file, 'bad pax size', pos);
          paxSize = Number(s);
        }
      } else if (typeflag === 'L') {
        longName = readString(data, 0, data.length);
      } else if (typeflag === 'K') {
        longLink = readString(data, 0, data.length);
      }
      pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;
      continue;
    }
    const magic = header.subarray(257, 263).toString('latin1');
    const prefix = magic === 'ustar\0' ? readString(header, 345, 155) : '';
    const rawName = paxPath ?? longName ?? (prefix ? `${prefix}/${readString(header, 0, 100)}` : readString(header, 0, 100));
    const rawLink = paxLink ?? longLink ?? readString(header, 157, 100);
    if (paxSize !== undefined) size = paxSize;
    paxPath = paxLink = longName = longLink = undefined;
    paxSize = undefined;
    // Header-only types carry no data whatever their size field says (as Go's archive/tar reads them).
    if (headerOnly) size = 0;
    if (dataStart + size > fileSize) throw invalid(file, 'truncated entry data', pos);
    const name = normalizeEntryName(file, rawName);
    const type: TarEntryType =
      typeflag === '0' || typeflag === '\0' || typeflag === '7'
        ? 'file'
        : typeflag === '5'
          ? 'directory'
          : typeflag === '2'
            ? 'symlink'
            : typeflag === '1'
              ? 'hardlink'
              : 'other';
    let linkname: string | undefined;
    if (type === 'symlink' || type === 'hardlink') {
      if (rawLink.startsWith('/')) throw unsafe(file, rawName, `links to the absolute path "${rawLink.slice(0, 200)}"`);
      // Symlink targets are relative to the link's directory, hardlink targets to the archive root.
      const base = type === 'symlink' ? name.split('/').slice(0, -1) : [];
      const resolved = resolveInside(base, rawLink);
      if (resolved === undefined || rawLink.includes('\0')) throw unsafe(file, rawName, `links outside the archive ("${rawLink.slice(0, 200)}")`);
      linkname = resolved;
    }
    if (name !== '') entries.set(name, { name, type, offset: dataStart, size, ...(linkname !== undefined ? { linkname } : {}) });
    pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;
  }
  return entries;
}
