import { describe, expect, it } from 'vitest';
import { Errors, type GatewayError, is } from '../errors/index.js';
import { PasswordPolicy } from './policy.js';

describe('PasswordPolicy', () => {
  const policy = new PasswordPolicy({ minLength: 12, maxLength: 128, minScore: 3 });
  const ctx = { username: 'alice', email: 'alice@example.com' };

  it('defaults to SPEC §8 (12–128, score ≥ 3)', () => {
    expect(new PasswordPolicy().options).toEqual({ minLength: 12, maxLength: 128, minScore: 3 });
  });

  it('"short" is too short and too weak', () => {
    const reasons = policy.check('short', ctx);
    expect(reasons[0]).toBe('Password must be at least 12 characters long.');
    expect(reasons[1]).toMatch(/^Password is too easy to guess \(strength [0-2] of 4, at least 3 required\)\./);
    expect(reasons).toHaveLength(2);
  });

  it('"password1234" is long enough but weak, with zxcvbn feedback', () => {
    const reasons = policy.check('password1234', ctx);
    expect(reasons).toEqual([
      'Password is too easy to guess (strength 1 of 4, at least 3 required). This is similar to a commonly used password. Add more words that are less common.',
    ]);
  });

  it('accepts a long random passphrase', () => {
    expect(policy.check('vivid-otter-plank-47-quartz', ctx)).toEqual([]);
    expect(policy.check('Gl4cier!mango#Turbine9', ctx)).toEqual([]);
  });

  it('rejects a password containing the username, case-insensitively', () => {
    const reasons = policy.check('vivid-ALICE-plank-47-quartz', ctx);
    expect(reasons).toContain('Password must not contain the username.');
    expect(reasons).toHaveLength(1);
  });

  it('ignores usernames shorter than 3 characters for the containment rule', () => {
    expect(policy.check('vivid-otter-plank-47-quartz', { username: 'vi' })).toEqual([]);
  });

  it('counts Unicode code points, not UTF-16 units', () => {
    const p = new PasswordPolicy({ minLength: 12, maxLength: 16, minScore: 0 });
    const emoji11 = '🦊🐙🦉🐝🦋🐢🦀🐳🦔🐧🦩'; // 11 code points, 22 UTF-16 units
    expect(emoji11.length).toBe(22);
    expect(p.check(emoji11, { username: 'bob' })).toEqual(['Password must be at least 12 characters long.']);
    expect(p.check(`${emoji11}🐌`, { username: 'bob' })).toEqual([]);
    expect(p.check('x'.repeat(17), { username: 'bob' })).toEqual(['Password must be at most 16 characters long.']);
  });

  it('rejects an over-long password without running zxcvbn on it', () => {
    const reasons = policy.check('Zq9!'.repeat(33), ctx);
    expect(reasons).toEqual(['Password must be at most 128 characters long.']);
  });

  it('assert throws weak_password (422) with the reasons', () => {
    let err: unknown;
    try {
      policy.assert('password1234', ctx);
    } catch (e) {
      err = e;
    }
    expect(is(err, Errors.weak_password)).toBe(true);
    const ge = err as GatewayError;
    expect(ge.status).toBe(422);
    expect(ge.extra).toEqual({ reasons: policy.check('password1234', ctx) });
    expect(() => policy.assert('vivid-otter-plank-47-quartz', ctx)).not.toThrow();
  });

  it('rejects invalid options', () => {
    expect(() => new PasswordPolicy({ minLength: 20, maxLength: 10 })).toThrow(/maxLength/);
    expect(() => new PasswordPolicy({ minScore: 5 })).toThrow(/minScore/);
  });
});
