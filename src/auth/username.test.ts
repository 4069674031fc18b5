import { describe, expect, it } from 'vitest';
import { Errors, type GatewayError, is } from '../errors/index.js';
import { validateUsername } from './username.js';

function rejection(input: unknown): GatewayError {
  try {
    validateUsername(input);
  } catch (e) {
    expect(is(e, Errors.invalid_input)).toBe(true);
    return e as GatewayError;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

describe('validateUsername', () => {
  it('lower-cases valid names', () => {
    expect(validateUsername('Alice')).toBe('alice');
    expect(validateUsername('BOB.Smith-2@Example.COM')).toBe('bob.smith-2@example.com');
    expect(validateUsername('a')).toBe('a');
    expect(validateUsername('0_x')).toBe('0_x');
    expect(validateUsername('a'.repeat(64))).toBe('a'.repeat(64));
  });

  it("rejects SQL-looking input such as admin' OR '1'='1 with 422 and a field error", () => {
    const e = rejection("admin' OR '1'='1");
    expect(e.status).toBe(422);
    expect(e.code).toBe('invalid_input');
    expect(e.extra).toEqual({
      errors: [{ field: 'username', message: 'must start with a letter or digit and contain only letters, digits, ".", "_", "@" and "-"' }],
    });
  });

  it('rejects empty, too long, a leading dot and other bad characters', () => {
    expect(rejection('').extra).toEqual({ errors: [{ field: 'username', message: 'is required' }] });
    expect(rejection('a'.repeat(65)).extra).toEqual({ errors: [{ field: 'username', message: 'must be at most 64 characters' }] });
    for (const bad of ['.alice', '-alice', '_alice', '@alice', 'al ice', ' alice', 'alice ', 'al/ice', 'al\\ice', 'al%ice', 'alice\n', 'al;ice']) {
      expect(rejection(bad).extra).toEqual({ errors: [{ field: 'username', message: expect.stringMatching(/letters, digits/) }] });
    }
  });

  it('rejects non-ASCII, including characters that lower-case to ASCII (Kelvin sign)', () => {
    expect('\u212Aelvin'.toLowerCase()).toBe('kelvin');
    expect(rejection('\u212Aelvin').extra).toEqual({ errors: [{ field: 'username', message: expect.stringMatching(/ASCII/) }] });
    rejection('ålice');
    rejection('alice\u0000');
  });

  it('rejects non-strings', () => {
    for (const v of [undefined, null, 42, ['alice'], { username: 'alice' }, true]) {
      expect(rejection(v).extra).toEqual({ errors: [{ field: 'username', message: 'must be a string' }] });
    }
  });
});
