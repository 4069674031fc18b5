import { randomBytes } from 'node:crypto';
import argon2 from 'argon2';

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
}

const PHC_ARGON2ID = /^\$argon2id\$/;

/**
 * Passwords are NFC-normalized before hashing and verifying, so the same password typed with
 * composed or decomposed accents (é vs e + ◌́) is the same password.
 */
function normalize(password: string): string {
  return password.normalize('NFC');
}

/**
 * argon2id password hashing (PHC strings). Hashing runs on the libuv threadpool, so the event
 * loop is not blocked.
 */
export class PasswordHasher {
  /** Effective parameters. */
  readonly params: { readonly memoryKib: number; readonly timeCost: number; readonly parallelism: number };
  private dummyHash: Promise<string> | undefined;

  constructor(opts: PasswordHasherOptions = {}) {
    const memoryKib = opts.memoryKib ?? 19_456;
    const timeCost = opts.timeCost ?? 2;
    const parallelism = opts.parallelism ?? 1;
    for (const [name, v] of Object.entries({ memoryKib, timeCost, parallelism })) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer`);
    }
    this.params = Object.freeze({ memoryKib, timeCost, parallelism });
  }

  /** Hashes a password with argon2id and the current parameters (PHC string). */
  hash(password: string): Promise<string> {
    return argon2.hash(normalize(password), {
      type: argon2.argon2id,
      memoryCost: this.params.memoryKib,
      timeCost: this.params.timeCost,
      parallelism: this.params.parallelism,
    });
  }

  /**
   * True when `password` matches `hash`. Never throws for a malformed or unsupported hash
   * (returns false), so a corrupt database row cannot turn a login into a 500.
   */
  async verify(hash: string, password: string): Promise<boolean> {
    if (typeof hash !== 'string' || typeof password !== 'string') return false;
    try {
      return await argon2.verify(hash, normalize(password));
    } catch {
      return false;
    }
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
   * Computes the dummy hash used by {@link dummyVerify} ahead of time, so the first unknown-user
   * login is not slower than later ones. Optional: call at startup.
   */
  async warmUp(): Promise<void> {
    await this.getDummyHash();
  }

  /**
   * Runs one verification against a dummy hash made with the same parameters, so a login for an
   * unknown user takes as long as one with a wrong password. Always resolves false.
   */
  async dummyVerify(password: string): Promise<false> {
    const hash = await this.getDummyHash();
    await this.verify(hash, typeof password === 'string' ? password : '');
    return false;
  }

  private getDummyHash(): Promise<string> {
    if (this.dummyHash === undefined) {
      const pending = this.hash(randomBytes(24).toString('base64url'));
      // Do not memoize a failure: the next call tries again.
      pending.catch(() => {
        if (this.dummyHash === pending) this.dummyHash = undefined;
      });
      this.dummyHash = pending;
    }
    return this.dummyHash;
  }
}
