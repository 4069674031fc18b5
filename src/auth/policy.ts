import { createRequire } from 'node:module';
import type { ZxcvbnFactory, ZxcvbnResult } from '@zxcvbn-ts/core';
import { Errors, GatewayError } from '../errors/index.js';

/** {@link PasswordPolicy} options (config `auth.password`). */
export interface PasswordPolicyOptions {
  /**
   * Minimum length in Unicode code points.
   * @default 12
   */
  minLength?: number;
  /**
   * Maximum length in Unicode code points.
   * @default 128
   */
  maxLength?: number;
  /**
   * Minimum zxcvbn score (0–4).
   * @default 3
   */
  minScore?: number;
}

/** Who the password is for; their own names make a password weaker. */
export interface PasswordContext {
  username: string;
  email?: string | null;
}

// The zxcvbn dictionaries are the biggest thing the gateway could hold (~25 MB of heap, ~45 MB
// of RSS once loaded and ranked), and only setting a password needs them: they are loaded on
// the first check, synchronously (the packages are CommonJS, which is also what an ESM import
// of them resolves to). Building the ranked dictionaries blocks for 0.2–0.35 s, so it happens
// once and the factory is kept: dropping it after a quiet spell was measured to give no RSS
// back (V8 keeps the pages) while every reload would stall the event loop again. The factory
// is never mutated afterwards (per-check user inputs are passed to check()), so sharing it is
// safe.
let factory: ZxcvbnFactory | undefined;
function zxcvbn(): ZxcvbnFactory {
  if (!factory) {
    const require = createRequire(import.meta.url);
    const core = require('@zxcvbn-ts/core') as typeof import('@zxcvbn-ts/core');
    const common = require('@zxcvbn-ts/language-common') as typeof import('@zxcvbn-ts/language-common');
    const en = require('@zxcvbn-ts/language-en') as typeof import('@zxcvbn-ts/language-en');
    factory = new core.ZxcvbnFactory({
      translations: en.translations,
      graphs: common.adjacencyGraphs,
      dictionary: { ...common.dictionary, ...en.dictionary },
    });
  }
  return factory;
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * Password rules (SPEC §8): length in code points, zxcvbn-ts strength, and not containing the
 * username. Passwords are judged in NFC form, as {@link PasswordHasher} hashes them.
 */
export class PasswordPolicy {
  /** Effective options. */
  readonly options: { readonly minLength: number; readonly maxLength: number; readonly minScore: number };

  constructor(opts: PasswordPolicyOptions = {}) {
    const minLength = opts.minLength ?? 12;
    const maxLength = opts.maxLength ?? 128;
    const minScore = opts.minScore ?? 3;
    if (!Number.isInteger(minLength) || minLength < 1) throw new RangeError('minLength must be a positive integer');
    if (!Number.isInteger(maxLength) || maxLength < minLength) throw new RangeError('maxLength must be an integer ≥ minLength');
    if (!Number.isInteger(minScore) || minScore < 0 || minScore > 4) throw new RangeError('minScore must be 0–4');
    this.options = Object.freeze({ minLength, maxLength, minScore });
  }

  /** Human-readable reasons the password is rejected; empty when it is acceptable. */
  check(password: string, ctx: PasswordContext): string[] {
    if (typeof password !== 'string') return ['Password must be a string.'];
    const pw = password.normalize('NFC');
    const { minLength, maxLength, minScore } = this.options;
    const reasons: string[] = [];
    const length = codePoints(pw);
    if (length < minLength) reasons.push(`Password must be at least ${minLength} characters long.`);
    if (length > maxLength) {
      // Do not feed arbitrarily long input to zxcvbn; too long is reason enough.
      reasons.push(`Password must be at most ${maxLength} characters long.`);
    } else if (length > 0) {
      const result: ZxcvbnResult = zxcvbn().check(pw, userInputs(ctx));
      if (result.score < minScore) {
        const hints = [result.feedback.warning, ...result.feedback.suggestions].filter((s): s is string => !!s);
        reasons.push(
          `Password is too easy to guess (strength ${result.score} of 4, at least ${minScore} required).${hints.length ? ` ${hints.join(' ')}` : ''}`,
        );
      }
    }
    const username = typeof ctx.username === 'string' ? ctx.username.normalize('NFC').toLowerCase() : '';
    if (codePoints(username) >= 3 && pw.toLowerCase().includes(username)) {
      reasons.push('Password must not contain the username.');
    }
    return reasons;
  }

  /**
   * Throws when {@link check} finds any reason.
   *
   * @throws GatewayError `weak_password` (422) with `extra.reasons`
   */
  assert(password: string, ctx: PasswordContext): void {
    const reasons = this.check(password, ctx);
    if (reasons.length) {
      throw new GatewayError(Errors.weak_password, reasons.join(' '), { extra: { reasons } });
    }
  }
}

/** The user's own identifiers, which zxcvbn treats as a dictionary. */
function userInputs(ctx: PasswordContext): string[] {
  const out: string[] = [];
  if (typeof ctx.username === 'string' && ctx.username) out.push(ctx.username.toLowerCase());
  if (typeof ctx.email === 'string' && ctx.email) {
    out.push(ctx.email.toLowerCase());
    const local = ctx.email.split('@')[0];
    if (local) out.push(local.toLowerCase());
  }
  return out;
}
