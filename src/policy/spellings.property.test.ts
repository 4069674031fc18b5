/**
 * Property (SPEC §3.1): every spelling of a path that some upstream may read as the canonical
 * path is judged like the canonical path, or refused with 400. Never allowed where the canonical
 * spelling is denied. Seeded, so every failure is reproducible from its message.
 */
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../errors/index.js';
import { compileRoutes, evaluateRequest, matchKey, normalizePath, policyContext, type AuthFacts, type Verdict } from './index.js';
import { route } from '../../test/support/routes.js';
import { seededRandom } from '../../test/support/prng.js';

const ctx = policyContext(
  compileRoutes([
    route('public', { path: '/public/**' }, { access: 'public' }),
    route('admin', { path: '/admin/**' }, { access: { roles: ['admin'] } }),
    route('internal', { path: '/internal/**' }, { access: 'deny', upstream: undefined }),
    route('json', { path: '/app/**/*.json' }, { access: { roles: ['x'] } }),
    route('catch-all', { path: '/**' }, { access: 'authenticated', allow_semicolons: true }),
  ]),
  { upstreams: {}, auth: { prefix: '/api/auth', allowed_origins: [] } },
  'https://gw.example.com',
);
const staff: AuthFacts = { identity: { sub: 'u1', username: 'alice', roles: ['staff'], amr: ['pwd'] }, via: 'bearer' };
const judge = (target: string): Verdict => evaluateRequest(ctx, { method: 'GET', target, host: 'gw.example.com' }, staff);

/** mulberry32: small, fast, good enough, seeded. */
const rng = seededRandom;

const SEGMENT_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789-_';

class Gen {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  segment(): string {
    let s = '';
    const n = 1 + this.int(6);
    for (let i = 0; i < n; i++) s += this.pick([...SEGMENT_CHARS]);
    return s;
  }
  /** A canonical path, mostly under a protected prefix. */
  canonical(): string {
    const top = this.pick(['admin', 'admin', 'internal', 'internal', 'app', 'app', 'public', 'other']);
    const segs = top === 'other' ? [this.segment()] : [top];
    const n = this.int(4);
    for (let i = 0; i < n; i++) segs.push(this.segment());
    if (top === 'app' && this.chance(0.7)) segs.push(`${this.segment()}.json`);
    return `/${segs.join('/')}`;
  }
  hex(c: string): string {
    const h = c.charCodeAt(0).toString(16).padStart(2, '0');
    return `%${this.chance(0.5) ? h.toUpperCase() : h.toLowerCase()}`;
  }
  /** Random case changes and percent-encoded unreserved characters. */
  respell(seg: string): string {
    let out = '';
    for (const c of seg) {
      let d = this.chance(0.3) ? (this.chance(0.5) ? c.toUpperCase() : c.toLowerCase()) : c;
      if (this.chance(0.15)) d = this.hex(d);
      out += d;
    }
    return out;
  }
  /** Trailing dots and spaces an upstream (Windows, IIS) drops. */
  tail(): string {
    return this.pick(['.', '..', '...', '%20', '%20%20', '.%20', '%20.', '%2e', '%2E', '.%2e', '. ', ' ']);
  }
  /** Path parameters an upstream (Tomcat, Jetty, Spring) cuts. */
  param(): string {
    return this.pick([';', ';x', ';jsessionid=ABC123', ';a=1;b=2', '%3B', '%3b', '%3Bx', '%3bjsessionid=1']);
  }
  /** One spelling of `canonical`, with a list of what was done (for failure messages). */
  spelling(canonical: string): string {
    const segs = canonical.slice(1).split('/');
    let out = '';
    for (const seg of segs) {
      let sep = '/';
      if (this.chance(0.1)) sep = this.pick(['//', '///']);
      out += sep;
      if (this.chance(0.1)) out += this.pick(['./', '././', './/']);
      if (this.chance(0.1)) out += `${this.respell(this.segment())}${this.chance(0.3) ? this.param() : ''}/../`;
      let s = this.respell(seg);
      if (this.chance(0.15)) s += this.tail();
      if (this.chance(0.15)) s += this.param();
      if (this.chance(0.03)) s += this.tail(); // after the parameter: part of it
      out += s;
    }
    if (this.chance(0.2)) out += this.pick(['/', '//', '/.', '/./']);
    if (this.chance(0.1)) out += this.pick(['?x=1', '?next=/admin', '?a=;b']);
    return out;
  }
}

const CASES = 4000;
const SEED = 0x5eed;

describe('spellings of a protected path (property, seeded)', () => {
  const g = new Gen(rng(SEED));
  const samples = Array.from({ length: CASES }, () => {
    const canonical = g.canonical();
    return { canonical, spelling: g.spelling(canonical) };
  });

  it('each spelling gets the canonical decision, or 400 (never allow where the canonical path is refused)', () => {
    const outcomes = { same: 0, refused: 0 };
    const canonicalDecisions = new Map<string, number>();
    for (const { canonical, spelling } of samples) {
      const want = judge(canonical);
      expect(want.status, canonical).not.toBe(400);
      canonicalDecisions.set(want.decision, (canonicalDecisions.get(want.decision) ?? 0) + 1);
      const got = judge(spelling);
      const msg = `${spelling} (canonical ${canonical}: ${want.decision} via ${want.route?.name}) → ${got.decision} ${got.status} via ${got.route?.name}: ${got.reason}`;
      if (got.decision === 'bad_request') {
        expect(got.status, msg).toBe(400);
        outcomes.refused++;
        continue;
      }
      expect(got.decision, msg).toBe(want.decision);
      expect(got.status, msg).toBe(want.status);
      expect(got.route?.name, msg).toBe(want.route?.name);
      if (want.decision !== 'allow') expect(got.decision, msg).not.toBe('allow');
      outcomes.same++;
    }
    // the generator must reach every kind of route and both outcomes
    for (const d of ['allow', 'forbidden', 'deny']) expect(canonicalDecisions.get(d) ?? 0, d).toBeGreaterThan(CASES / 10);
    expect(outcomes.same).toBeGreaterThan(CASES / 3);
    expect(outcomes.refused).toBeGreaterThan(CASES / 20);
  });

  it('spellings without ";" (or %3B) and literal spaces are never refused', () => {
    let checked = 0;
    for (const { canonical, spelling } of samples) {
      const path = spelling.split('?')[0];
      if (/;|%3b| /i.test(path)) continue;
      checked++;
      const got = judge(spelling);
      expect(got.decision, `${spelling} (canonical ${canonical}): ${got.reason}`).toBe(judge(canonical).decision);
    }
    expect(checked).toBeGreaterThan(CASES / 3);
  });

  it('normalizing is idempotent, and a spelling has the key of its canonical path (case-folded)', () => {
    let keyed = 0;
    for (const { canonical, spelling } of samples) {
      let path: string;
      try {
        path = normalizePath(spelling).path;
      } catch (e) {
        expect(e, spelling).toBeInstanceOf(GatewayError);
        expect((e as GatewayError).code, spelling).toBe('bad_path');
        continue;
      }
      expect(normalizePath(path).path, spelling).toBe(path);
      let key: ReturnType<typeof matchKey>;
      try {
        key = matchKey(path);
      } catch (e) {
        expect((e as GatewayError).code, spelling).toBe('bad_path');
        continue;
      }
      expect(key.folded, `${spelling} → ${path}`).toBe(matchKey(canonical).folded);
      expect(matchKey(key.sensitive), spelling).toEqual(key);
      keyed++;
    }
    expect(keyed).toBeGreaterThan(CASES / 2);
  });

  // An upstream that decodes twice reads `%25%36%31` as `%61` and then as `a`. SPEC §3.1 refuses
  // double-encoded bytes; written with escaped hex digits they must be refused too, not matched
  // as some other path. (Fails against normalize.ts as of this commit: see the report.)
  it('double encoding written with escaped hex digits is refused (400), never judged as another path', () => {
    const h = new Gen(rng(SEED + 1));
    for (let n = 0; n < 200; n++) {
      const canonical = h.canonical();
      const want = judge(canonical);
      if (want.decision === 'allow') continue;
      const segs = canonical.slice(1).split('/');
      const i = h.int(segs.length);
      const j = h.int(segs[i].length);
      const c = segs[i].charCodeAt(j).toString(16);
      segs[i] = `${segs[i].slice(0, j)}%25${h.hex(c[0])}${h.hex(c[1])}${segs[i].slice(j + 1)}`;
      const spelling = `/${segs.join('/')}`;
      const got = judge(spelling);
      expect(got.decision, `${spelling} (canonical ${canonical}: ${want.decision}) → ${got.decision} via ${got.route?.name}`).toBe('bad_request');
    }
  });
});
