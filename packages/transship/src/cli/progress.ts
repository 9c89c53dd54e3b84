// A progress line for long transfers on a TTY (bytes, blobs, rate, ETA), redrawn at most 10×/s on stderr. Off when
// stderr is not a TTY or with --json/--no-progress, so scripts and logs never see control characters.
import type { CopyEvent } from '../transfer/copy.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export class ProgressBar {
  private totalBytes = 0;
  private totalBlobs = 0;
  private doneBlobs = 0;
  private skippedBytes = 0;
  private readonly perBlob = new Map<string, number>();
  private finishedBytes = 0;
  private readonly started = Date.now();
  private lastDraw = 0;
  private drawn = false;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  static enabled(opts: { json?: boolean; progress?: boolean }): boolean {
    return !opts.json && opts.progress !== false && Boolean(process.stderr.isTTY);
  }

  onEvent = (e: CopyEvent): void => {
    switch (e.type) {
      case 'plan':
        this.totalBytes = e.bytes;
        this.totalBlobs = e.blobs;
        break;
      case 'present':
        this.doneBlobs += e.blobs;
        this.skippedBytes = e.bytes;
        break;
      case 'blob-progress':
        this.perBlob.set(e.digest, e.bytes);
        break;
      case 'blob-done':
        this.perBlob.delete(e.digest);
        this.finishedBytes += e.size;
        this.doneBlobs++;
        break;
      case 'blob-start':
        break;
    }
    this.draw(false);
  };

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    let moving = this.finishedBytes;
    for (const b of this.perBlob.values()) moving += b;
    const done = moving + this.skippedBytes;
    const secs = Math.max(0.001, (now - this.started) / 1000);
    const rate = moving / secs;
    const remaining = Math.max(0, this.totalBytes - done);
    const eta = rate > 0 ? Math.ceil(remaining / rate) : 0;
    const pct = this.totalBytes ? Math.min(100, Math.floor((done / this.totalBytes) * 100)) : 100;
    const width = 24;
    const filled = Math.round((pct / 100) * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const line = `[${bar}] ${pct}% ${formatBytes(done)}/${formatBytes(this.totalBytes)} blobs ${this.doneBlobs}/${this.totalBlobs} ${formatBytes(rate)}/s ETA ${eta}s`;
    this.out.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  finish(): void {
    if (!this.drawn) return;
    this.draw(true);
    this.out.write('\n');
  }
}
