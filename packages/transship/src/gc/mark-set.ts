// The mark set: which digests a pass found reachable, in 8 bytes each. It keeps the first 64 bits of every digest in
// a BigUint64Array, sorted once when marking is done and then searched by bisection. A prefix collision can only make
// a garbage blob look reachable (it is kept, never a live one deleted): for n reachable digests and one garbage
// blob the chance is n / 2⁶⁴ (5·10⁻¹⁴ for a million). A Set of hex strings would cost ~120 bytes a digest; this
// costs 8 (16 while growing), so a store with a million reachable blobs marks in 8–16 MB.
import { parseDigest } from '@transship/core/digest';

function prefix64(digest: string): bigint {
  // The hex of a validated digest: its first 16 characters are 64 bits.
  return BigInt(`0x${parseDigest(digest).hex.slice(0, 16)}`);
}

export class MarkSet {
  private items = new BigUint64Array(1024);
  private length = 0;
  private sorted = true;

  add(digest: string): void {
    if (this.length === this.items.length) {
      const grown = new BigUint64Array(this.items.length * 2);
      grown.set(this.items);
      this.items = grown;
    }
    this.items[this.length++] = prefix64(digest);
    this.sorted = false;
  }

  /** Sorts and removes duplicates; called by has() on first use after adds. */
  private seal(): void {
    const view = this.items.subarray(0, this.length).sort();
    let w = 0;
    for (let r = 0; r < view.length; r++) if (w === 0 || view[r] !== view[w - 1]) view[w++] = view[r] as bigint;
    this.length = w;
    this.sorted = true;
  }

  has(digest: string): boolean {
    if (!this.sorted) this.seal();
    const x = prefix64(digest);
    let lo = 0;
    let hi = this.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.items[mid] as bigint;
      if (v === x) return true;
      if (v < x) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }

  /** Distinct digests marked (after sealing). */
  get size(): number {
    if (!this.sorted) this.seal();
    return this.length;
  }

  /** Bytes held by the structure. */
  get bytes(): number {
    return this.items.byteLength;
  }
}
