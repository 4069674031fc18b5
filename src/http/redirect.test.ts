import { describe, expect, it } from 'vitest';
import { originAllowed, safeRedirect } from './redirect.js';

const OWN = 'https://gw.example.com';
const ALLOWED = ['https://app.example.com'];

describe('safeRedirect', () => {
  it.each([
    ['/app/x?y=1', '/app/x?y=1'],
    ['/app/x#frag', '/app/x#frag'],
    ['/', '/'],
    ['https://gw.example.com/deep/link?q', '/deep/link?q'],
    ['https://app.example.com/dash', 'https://app.example.com/dash'],
    ['/a/../b', '/b'],
  ])('keeps %s', (rd, want) => expect(safeRedirect(rd, OWN, ALLOWED)).toBe(want));

  it.each([
    '//evil.example',
    '/\\evil.example',
    '/%09/evil.example',
    '/\t/evil.example',
    '/\n/evil.example',
    '/%0a/evil.example',
    '/%0d%0a/evil.example',
    'https://evil.example',
    'https://good.evil',
    'https://app.example.com.evil.example/',
    'https://gw.example.com@evil.example',
    'https://good@evil.example',
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    'data:text/html,hi',
    '%2F%2Fevil.example',
    '/%2F%2Fevil.example',
    '/%2f/evil.example',
    '%5Cevil.example',
    '/%5Cevil.example',
    '/%255C%255Cevil.example',
    '%2F%5Cevil.example',
    '\\\\evil.example',
    'http://gw.example.com/x',
    'evil.example',
    '',
    ' /x',
    'https://user:pw@app.example.com/',
  ])('falls back to / for %j', (rd) => expect(safeRedirect(rd, OWN, ALLOWED)).toBe('/'));

  it('rejects non-strings and absurdly long values', () => {
    expect(safeRedirect(undefined, OWN)).toBe('/');
    expect(safeRedirect(['/a'], OWN)).toBe('/');
    expect(safeRedirect('/' + 'a'.repeat(5000), OWN)).toBe('/');
  });
});

describe('originAllowed', () => {
  it('accepts the own origin and allowed ones, from Origin or Referer', () => {
    expect(originAllowed({ origin: OWN }, OWN, [])).toBe(true);
    expect(originAllowed({ origin: 'https://app.example.com' }, OWN, ALLOWED)).toBe(true);
    expect(originAllowed({ referer: 'https://gw.example.com/page?x' }, OWN, [])).toBe(true);
  });
  it('refuses foreign, look-alike, null and missing origins', () => {
    expect(originAllowed({ origin: 'https://evil.example' }, OWN, ALLOWED)).toBe(false);
    expect(originAllowed({ origin: 'https://gw.example.com.evil.example' }, OWN, ALLOWED)).toBe(false);
    expect(originAllowed({ origin: 'http://gw.example.com' }, OWN, ALLOWED)).toBe(false);
    expect(originAllowed({ origin: 'null' }, OWN, ALLOWED)).toBe(false);
    expect(originAllowed({ referer: 'https://evil.example/x' }, OWN, ALLOWED)).toBe(false);
    expect(originAllowed({}, OWN, ALLOWED)).toBe(false);
    // Origin wins over a same-site Referer.
    expect(originAllowed({ origin: 'https://evil.example', referer: 'https://gw.example.com/' }, OWN, ALLOWED)).toBe(false);
  });
});
