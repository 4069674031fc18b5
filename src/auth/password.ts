import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import argon2 from 'argon2';
import { WorkQueue } from './work-queue.js';

/** argon2id cost parameters. */
export interface PasswordHasherOptions {
  /**
   * Memory cost in KiB (OWASP minimum for argon2id: 19 MiB).
   * @default 19456
   */
  memoryKib?: number;
  /**
   * Iterations.
   * @default 2
   */
  timeCost?: number;
  /**
   * Lanes; 1 gives the best throughput per core.
   * @default 1
   */
  parallelism?: number;
  /**
   * Where hash and verify runs wait for their turn (bounded concurrency, bounded queue; a full
   * queue rejects with 503 `busy`).
   * @default a queue of {@link defaultArgon2Concurrency} slots and {@link DEFAULT_ARGON2_MAX_QUEUE} places
   */
  queue?: WorkQueue;
}

/** Default waiting places in the argon2 queue (config `auth.argon2.max_queue`). */
export const DEFAULT_ARGON2_MAX_QUEUE = 32;

/**
 * Default argon2 runs at once (config `auth.argon2.max_concurrent`): one per core less one, so
 * one core is always left for proxied traffic, and at least 1.
 */
export function defaultArgon2Concurrency(cores = availableParallelism()): number {
  return Math.max(1, cores - 1);
}

const PHC_ARGON2ID = /^\$argon2id\$/;

/**
 * Passwords are NFC-normalized before hashing and verifying, so the same password typed with
 * composed or decomposed accents (é vs e + ◌́) is the same password.
 */
function normalize(password: string): string {
  return password.normalize('NFC');
}

/** Unpadded standard base64, as PHC strings write salts and digests. */
function b64(buf: Buffer): string {
  return buf.toString('base64').replace(/=+$/, '');
}

/**
 * argon2id password hashing (PHC strings). Hashing runs on the libuv threadpool, so the event
 * loop is not blocked; every hash and verify (the dummy one included) waits its turn in a
 * bounded {@link WorkQueue}, so a burst of sign-ins cannot take every core.
 */
export class PasswordHasher {
  /** Effective parameters. */
  readonly params: { readonly memoryKib: number; readonly timeCost: number; readonly parallelism: number };
  /** The queue hash and verify runs go through. */
  readonly queue: WorkQueue;
  private dummyHash: string | undefined;

  constructor(opts: PasswordHasherOptions = {}) {
    const memoryKib = opts.memoryKib ?? 19_456;
    const timeCost = opts.timeCost ?? 2;
    const parallelism = opts.parallelism ?? 1;
    for (const [name, v] of Object.entries({ memoryKib, timeCost, parallelism })) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer`);
    }
    this.params = Object.freeze({ memoryKib, timeCost, parallelism });
    this.queue = opts.queue ?? new WorkQueue({ concurrency: defaultArgon2Concurrency(), maxQueue: DEFAULT_ARGON2_MAX_QUEUE });
  }

  /**
   * Hashes a password with argon2id and the current parameters (PHC string).
   *
   * @throws GatewayError `busy` (503, Retry-After) when the queue is full
   */
  hash(password: string): Promise<string> {
    const pw = normalize(password);
    return this.queue.run(() =>
      argon2.hash(pw, {
        type: argon2.argon2id,
        memoryCost: this.params.memoryKib,
        timeCost: this.params.timeCost,
        parallelism: this.params.parallelism,
      }),
    );
  }

  /**
   * True when `password` matches `hash`. Never throws for a malformed or unsupported hash
   * (returns false), so a corrupt database row cannot turn a login into a 500.
   *
   * @throws GatewayError `busy` (503, Retry-After) when the queue is full — never a verdict
   */
  async verify(hash: string, password: string): Promise<boolean> {
    if (typeof hash !== 'string' || typeof password !== 'string') return false;
    const pw = normalize(password);
    return this.queue.run(async () => {
      try {
        return await argon2.verify(hash, pw);
      } catch {
        return false;
      }
    });
  }

  /**
   * True when `hash` is weaker than the configured parameters (any of m, t, p lower, an older
   * argon2 version, not argon2id) or malformed, so it should be replaced at the next successful
   * login. A hash made with *stronger* parameters is kept: re-hashing it would lower its cost.
   */
  needsRehash(hash: string): boolean {
    if (typeof hash !== 'string' || !PHC_ARGON2ID.test(hash)) return true;
    const m = /^\$argon2id\$v=(\d+)\$([^$]+)\$/.exec(hash);
    if (!m) return true;
    const p = Object.fromEntries(m[2].split(',').map((kv) => kv.split('=') as [string, string]));
    // Written as !(a >= b) so an unparseable value (NaN) also asks for a rehash.
    return Number(m[1]) < 19 || !(Number(p.m) >= this.params.memoryKib && Number(p.t) >= this.params.timeCost && Number(p.p) >= this.params.parallelism);
  }

  /**
   * Prepares the dummy hash used by {@link dummyVerify}. Optional (it is made on first use
   * otherwise) and cheap: no argon2 run.
   */
  async warmUp(): Promise<void> {
    this.getDummyHash();
  }

  /**
   * Runs one verification (through the same queue) against a dummy hash with the same
   * parameters, so a login for an unknown user takes as long as one with a wrong password.
   * Always resolves false.
   *
   * @throws GatewayError `busy` (503) when the queue is full, exactly as {@link verify} does
   */
  async dummyVerify(password: string): Promise<false> {
    await this.verify(this.getDummyHash(), typeof password === 'string' ? password : '');
    return false;
  }

  /**
   * A PHC string with the current parameters, a random salt and a random 32-byte digest. Verifying
   * against it costs exactly what verifying a real hash costs (argon2 recomputes the digest
   * from the salt and parameters, then compares), yet building it runs no argon2 — which
   * would take ~20 ms and leave ~20 MiB in the C allocator of an otherwise idle process — and
   * no password matches it (a 2^-256 chance).
   */
  private getDummyHash(): string {
    const { memoryKib: m, timeCost: t, parallelism: p } = this.params;
    this.dummyHash ??= `$argon2id$v=19$m=${m},t=${t},p=${p}$${b64(randomBytes(16))}$${b64(randomBytes(32))}`;
    return this.dummyHash;
  }
}
