import argon2 from 'argon2';
import { describe, expect, it } from 'vitest';
import { DEFAULT_ARGON2_MAX_QUEUE, PasswordHasher, defaultArgon2Concurrency } from './password.js';
import { WorkQueue } from './work-queue.js';

/** Parses `$argon2id$v=19$m=19456,p=1,t=2$salt$hash` (parameter order as the library writes it). */
function parsePhc(hash: string): { id: string; version: number; m: number; t: number; p: number; salt: string; digest: string } {
  const parts = hash.split('$');
  if (parts.length !== 6 || parts[0] !== '' || !/^v=\d+$/.test(parts[2])) throw new Error(`not a PHC argon2 string: ${hash}`);
  const params = Object.fromEntries(parts[3].split(',').map((kv) => kv.split('=') as [string, string]));
  expect(Object.keys(params).sort()).toEqual(['m', 'p', 't']);
  return {
    id: parts[1],
    version: Number(parts[2].slice(2)),
    m: Number(params.m),
    t: Number(params.t),
    p: Number(params.p),
    salt: parts[4],
    digest: parts[5],
  };
}

describe('PasswordHasher', () => {
  const hasher = new PasswordHasher();

  it('defaults to argon2id m=19456 t=2 p=1 with a random salt', async () => {
    expect(hasher.params).toEqual({ memoryKib: 19456, timeCost: 2, parallelism: 1 });
    const h1 = parsePhc(await hasher.hash('correct horse battery staple'));
    expect(h1).toMatchObject({ id: 'argon2id', version: 19, m: 19456, t: 2, p: 1 });
    expect(Buffer.from(h1.salt, 'base64').length).toBe(16);
    expect(Buffer.from(h1.digest, 'base64').length).toBe(32);
    const h2 = parsePhc(await hasher.hash('correct horse battery staple'));
    expect(h2.salt).not.toBe(h1.salt);
  });

  it('uses configured (higher) parameters', async () => {
    const strong = new PasswordHasher({ memoryKib: 32768, timeCost: 3, parallelism: 2 });
    expect(parsePhc(await strong.hash('x'))).toMatchObject({ id: 'argon2id', m: 32768, t: 3, p: 2 });
  });

  it('verifies the right password and rejects a wrong one', async () => {
    const hash = await hasher.hash('Tr0ub4dor&3-but-longer');
    expect(await hasher.verify(hash, 'Tr0ub4dor&3-but-longer')).toBe(true);
    expect(await hasher.verify(hash, 'Tr0ub4dor&3-but-longeR')).toBe(false);
    expect(await hasher.verify(hash, '')).toBe(false);
  });

  it('treats composed and decomposed Unicode as the same password (NFC)', async () => {
    const hash = await hasher.hash('caf\u00e9 au lait');
    expect(await hasher.verify(hash, 'cafe\u0301 au lait')).toBe(true);
  });

  it('returns false, never throws, for malformed or foreign hashes', async () => {
    const good = await hasher.hash('pw');
    const malformed = [
      '',
      'not-a-hash',
      '$argon2id$',
      '$argon2id$v=19$m=19456,t=2,p=1$$',
      '$2b$10$abcdefghijklmnopqrstuu1234567890123456789012345678901',
      `${good.slice(0, -5)}!!!!!`,
      good.replace('argon2id', 'argon2x'),
    ];
    for (const h of malformed) {
      await expect(hasher.verify(h, 'pw')).resolves.toBe(false);
    }
    await expect(hasher.verify(undefined as unknown as string, 'pw')).resolves.toBe(false);
    await expect(hasher.verify(null as unknown as string, 'pw')).resolves.toBe(false);
  });

  it('needsRehash: true for weaker params or another argon2 type, false for current', async () => {
    const weak = await argon2.hash('pw', { type: argon2.argon2id, memoryCost: 8192, timeCost: 1, parallelism: 1 });
    expect(parsePhc(weak)).toMatchObject({ m: 8192, t: 1 });
    expect(hasher.needsRehash(weak)).toBe(true);
    const fewerIterations = await argon2.hash('pw', { type: argon2.argon2id, memoryCost: 19456, timeCost: 1, parallelism: 1 });
    expect(hasher.needsRehash(fewerIterations)).toBe(true);
    const argon2i = await argon2.hash('pw', { type: argon2.argon2i, memoryCost: 19456, timeCost: 2, parallelism: 1 });
    expect(hasher.needsRehash(argon2i)).toBe(true);
    expect(hasher.needsRehash(await hasher.hash('pw'))).toBe(false);
    expect(hasher.needsRehash('garbage')).toBe(true);
    // Stronger than configured is kept: re-hashing would lower its cost.
    const stronger = await argon2.hash('pw', { type: argon2.argon2id, memoryCost: 32768, timeCost: 3, parallelism: 1 });
    expect(hasher.needsRehash(stronger)).toBe(false);
    // A weak hash still verifies, so the login can succeed and upgrade it.
    expect(await hasher.verify(weak, 'pw')).toBe(true);
  });

  it('dummyVerify always resolves false and costs about as much as a real verify', async () => {
    const h = new PasswordHasher();
    await h.warmUp();
    const hash = await h.hash('some password');
    expect(await h.dummyVerify('some password')).toBe(false);

    const time = async (fn: () => Promise<unknown>): Promise<number> => {
      const t = performance.now();
      await fn();
      return performance.now() - t;
    };
    const real: number[] = [];
    const dummy: number[] = [];
    for (let i = 0; i < 3; i++) {
      real.push(await time(() => h.verify(hash, 'wrong password')));
      dummy.push(await time(() => h.dummyVerify('wrong password')));
    }
    const median = (xs: number[]): number => xs.sort((a, b) => a - b)[1];
    const ratio = median(dummy) / median(real);
    // Same argon2 parameters ⇒ same work; generous bounds keep this stable on a busy box.
    expect(ratio).toBeGreaterThan(0.4);
    expect(ratio).toBeLessThan(2.5);
  });

  it('the dummy hash runs no argon2 to make, has the same parameters, and matches nothing', async () => {
    const h = new PasswordHasher({ memoryKib: 19456, timeCost: 2, parallelism: 1 });
    const hashes: string[] = [];
    const orig = argon2.verify;
    // Spy on what dummyVerify verifies against (argon2's default export is a plain object).
    (argon2 as { verify: typeof argon2.verify }).verify = async (digest, pw, o) => {
      hashes.push(digest);
      return orig(digest, pw, o);
    };
    let ran = 0;
    const runs = h.queue.run.bind(h.queue);
    h.queue.run = (task) => {
      ran++;
      return runs(task);
    };
    try {
      await h.warmUp();
      expect(ran).toBe(0); // no argon2 run at warm-up
      await Promise.all([h.dummyVerify('a'), h.dummyVerify('b')]);
      await h.dummyVerify('c');
      expect(ran).toBe(3); // one verify each, through the queue
    } finally {
      (argon2 as { verify: typeof argon2.verify }).verify = orig;
    }
    expect(new Set(hashes).size).toBe(1);
    expect(parsePhc(hashes[0])).toMatchObject({ id: 'argon2id', version: 19, m: 19456, t: 2, p: 1 });
    expect(Buffer.from(parsePhc(hashes[0]).salt, 'base64').length).toBe(16);
    expect(Buffer.from(parsePhc(hashes[0]).digest, 'base64').length).toBe(32);
    // A well-formed hash argon2 accepts (it verifies to false, it does not throw).
    await expect(argon2.verify(hashes[0], '')).resolves.toBe(false);
    // Another hasher has its own random dummy.
    const other = new PasswordHasher();
    const seen: string[] = [];
    (argon2 as { verify: typeof argon2.verify }).verify = async (digest, pw, o) => {
      seen.push(digest);
      return orig(digest, pw, o);
    };
    try {
      await other.dummyVerify('x');
    } finally {
      (argon2 as { verify: typeof argon2.verify }).verify = orig;
    }
    expect(seen[0]).not.toBe(hashes[0]);
  });

  it('hash, verify and dummyVerify go through the bounded queue; a full queue is 503 busy, never a verdict', async () => {
    const queue = new WorkQueue({ concurrency: 1, maxQueue: 1 });
    const h = new PasswordHasher({ queue });
    const hash = await h.hash('pw-one');
    expect(queue.concurrency).toBe(1);
    // One running, one waiting: the third of each kind is refused.
    const running = h.verify(hash, 'pw-one');
    const waiting = h.dummyVerify('pw-one');
    await expect(h.verify(hash, 'pw-one')).rejects.toMatchObject({ code: 'busy', status: 503 });
    await expect(h.dummyVerify('pw-one')).rejects.toMatchObject({ code: 'busy', status: 503 });
    await expect(h.hash('pw-two')).rejects.toMatchObject({ code: 'busy', status: 503, headers: { 'retry-after': expect.stringMatching(/^\d+$/) } });
    expect(await running).toBe(true);
    expect(await waiting).toBe(false);
    // A malformed hash is still false, not an error, and frees its slot.
    expect(await h.verify('garbage', 'pw')).toBe(false);
    expect([queue.running, queue.queued]).toEqual([0, 0]);
  });

  it('default concurrency: one per core less one, at least 1', () => {
    expect(defaultArgon2Concurrency(1)).toBe(1);
    expect(defaultArgon2Concurrency(2)).toBe(1);
    expect(defaultArgon2Concurrency(8)).toBe(7);
    const h = new PasswordHasher();
    expect(h.queue.concurrency).toBe(defaultArgon2Concurrency());
    expect(h.queue.maxQueue).toBe(DEFAULT_ARGON2_MAX_QUEUE);
  });

  it('rejects invalid parameters', () => {
    expect(() => new PasswordHasher({ memoryKib: 0 })).toThrow(/memoryKib/);
    expect(() => new PasswordHasher({ timeCost: 1.5 })).toThrow(/timeCost/);
  });
});
