/*
 * Random: the one source of randomness for everything above src/runtime/.
 *
 * Block seqs, fsids, election timeouts and fault injection all draw from an
 * injected Random.  Production uses CryptoRandom; the simulator and tests
 * use SeededRandom, so the same seed replays the same run exactly.
 *
 * Both implementations produce 32-bit words (next32) and derive everything
 * else from them, the same way, so a SeededRandom and a CryptoRandom differ
 * only in where the words come from:
 *   - u64(): two words, high first.
 *   - int(n): unbiased, by rejection: draw w, reject the top partial range.
 *     n up to 2^53 (above 2^32 a 53-bit draw is used).
 *   - float(): 53 random bits / 2^53, in [0, 1).
 *   - bytes(n): words, little-endian.
 *
 * SeededRandom is xoshiro128** (Blackman and Vigna), a small fast 32-bit
 * generator with a 2^128-1 period, seeded by running splitmix64 over the
 * bigint seed (the construction its authors recommend; an all-zero state is
 * impossible that way).  Rejected: a bigint xoshiro256**, about ten times
 * slower in JS for no benefit at simulator scale; Math.random, unseedable.
 *
 * fork(label) gives an independent stream derived from the ORIGINAL seed and
 * the label (FNV-1a of the label mixed in with splitmix64), not from the
 * current state.  So adding draws to one subsystem's stream never shifts
 * another's: the simulator forks 'net', 'disk', 'node3' once and each
 * replays on its own.  Forking the same label twice gives the same stream.
 */
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';

export interface Random {
  bytes(n: number): Uint8Array;
  u64(): bigint;
  /** Uniform integer in [0, maxExclusive), maxExclusive in 1..2^53. */
  int(maxExclusive: number): number;
  /** Uniform in [0, 1). */
  float(): number;
}

const TWO32 = 0x1_0000_0000;
const TWO53 = 2 ** 53;

abstract class WordRandom implements Random {
  protected abstract next32(): number;

  u64(): bigint {
    const hi = this.next32();
    const lo = this.next32();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  int(maxExclusive: number): number {
    assert(Number.isInteger(maxExclusive) && maxExclusive >= 1 && maxExclusive <= TWO53,
      `int() bound must be an integer in 1..2^53: ${maxExclusive}`);
    if (maxExclusive <= TWO32) {
      const limit = TWO32 - (TWO32 % maxExclusive);
      for (;;) {
        const w = this.next32();
        if (w < limit) return w % maxExclusive;
      }
    }
    const limit = TWO53 - (TWO53 % maxExclusive);
    for (;;) {
      const w = this.draw53();
      if (w < limit) return w % maxExclusive;
    }
  }

  float(): number {
    return this.draw53() / TWO53;
  }

  bytes(n: number): Uint8Array {
    assert(Number.isSafeInteger(n) && n >= 0, `bytes() length must be >= 0: ${n}`);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      let w = this.next32();
      for (let j = i; j < Math.min(i + 4, n); j++) {
        out[j] = w & 0xff;
        w >>>= 8;
      }
    }
    return out;
  }

  private draw53(): number {
    const hi = this.next32() >>> 11; // 21 bits
    const lo = this.next32();
    return hi * TWO32 + lo;
  }
}

/* ---- production ------------------------------------------------------------ */

export class CryptoRandom extends WordRandom {
  private readonly pool = new Uint32Array(1024);
  private at = this.pool.length;

  protected next32(): number {
    if (this.at === this.pool.length) {
      randomFillSync(this.pool);
      this.at = 0;
    }
    return this.pool[this.at++]!;
  }
}

/* ---- deterministic --------------------------------------------------------- */

const M64 = 0xffff_ffff_ffff_ffffn;

/** One splitmix64 step: returns [output, next state]. */
function splitmix64(state: bigint): [bigint, bigint] {
  const s = (state + 0x9e37_79b9_7f4a_7c15n) & M64;
  let z = s;
  z = ((z ^ (z >> 30n)) * 0xbf58_476d_1ce4_e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d0_49bb_1331_11ebn) & M64;
  return [z ^ (z >> 31n), s];
}

/** FNV-1a 64 of a label's UTF-8 bytes. */
function fnv1a64(label: string): bigint {
  let h = 0xcbf2_9ce4_8422_2325n;
  for (const b of new TextEncoder().encode(label)) {
    h ^= BigInt(b);
    h = (h * 0x100_0000_01b3n) & M64;
  }
  return h;
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

export class SeededRandom extends WordRandom {
  readonly seed: bigint;
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  constructor(seed: bigint | number) {
    super();
    const s = BigInt(seed);
    assert(s >= 0n && s <= M64, `seed must be a u64: ${s}`);
    this.seed = s;
    let st = s;
    let a: bigint;
    let b: bigint;
    [a, st] = splitmix64(st);
    [b, st] = splitmix64(st);
    this.s0 = Number(a & 0xffff_ffffn);
    this.s1 = Number(a >> 32n);
    this.s2 = Number(b & 0xffff_ffffn);
    this.s3 = Number(b >> 32n);
    assert((this.s0 | this.s1 | this.s2 | this.s3) !== 0, 'xoshiro state must not be all zero');
  }

  /**
   * A generator started from an explicit xoshiro128** state, for checking
   * the generator against its published reference outputs.
   */
  static fromState(state: readonly [number, number, number, number]): SeededRandom {
    const r = new SeededRandom(0n);
    assert(state.some((w) => w !== 0), 'xoshiro state must not be all zero');
    [r.s0, r.s1, r.s2, r.s3] = state.map((w) => w >>> 0) as [number, number, number, number];
    return r;
  }

  /** An independent stream named by label; see the top comment. */
  fork(label: string): SeededRandom {
    const [mixed] = splitmix64(this.seed ^ fnv1a64(label));
    return new SeededRandom(mixed);
  }

  protected next32(): number {
    // xoshiro128**
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }
}
