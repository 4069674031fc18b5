import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validateUsername } from '../../auth/index.js';
import type { Config } from '../../config/index.js';
import type { Services } from '../../services.js';
import type { UserRecord } from '../../store/ports.js';
import { UsageError, flag, opt, parseArgs, type Parsed } from '../args.js';
import type { Io } from '../io.js';
import { withServices } from './services.js';

const USAGE = 'usage: portcullis user add|list|show|set-roles|disable|enable|delete|passwd|unlock|reset-2fa …';
const ROLE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** `portcullis user …`: account administration through the gateway's own services. */
export async function run(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  const one = (p: Parsed, usage: string) => {
    if (p.positionals.length !== 1) throw new UsageError(`usage: portcullis user ${usage}`);
    return p.positionals[0];
  };
  switch (sub) {
    case 'add': {
      const p = parseArgs(rest, { valued: ['config', 'email', 'role'], boolean: ['password-stdin'] });
      const name = validateUsername(one(p, 'add NAME [--email E] [--role R]... --password-stdin'));
      const email = opt(p, 'email') ?? null;
      if (email !== null && !/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError(`not an email address: "${email}"`);
      const roles = p.options.get('role') ?? [];
      for (const r of roles) if (!ROLE.test(r)) throw new UsageError(`not a role name: "${r}"`);
      const password = await readPassword(p, io);
      return withServices(p, io, async (svc) => {
        const u = await svc.users.add({ username: name, email, roles, password });
        io.out(`created user ${u.username} (${u.id})${u.roles.length ? ` with roles ${u.roles.join(', ')}` : ''}\n`);
        return 0;
      });
    }
    case 'list': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['json'] });
      if (p.positionals.length) throw new UsageError('usage: portcullis user list [--json]');
      return withServices(p, io, async (svc) => {
        const users = await svc.users.list();
        if (flag(p, 'json')) io.out(`${JSON.stringify(users.map(describe), null, 2)}\n`);
        else io.out(table(users));
        return 0;
      });
    }
    case 'show': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['json'] });
      const name = one(p, 'show NAME');
      return withServices(p, io, async (svc) => {
        const u = await findUser(svc, name);
        io.out(`${JSON.stringify({ ...describe(u), active_sessions: await svc.users.activeSessions(u) }, null, 2)}\n`);
        return 0;
      });
    }
    case 'set-roles': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['none'] });
      const [name, ...roles] = p.positionals;
      // No roles by accident (a forgotten argument) would strip an account silently: removing
      // every role is said explicitly.
      if (!name || (roles.length === 0) === !flag(p, 'none'))
        throw new UsageError('usage: portcullis user set-roles NAME R... (at least one role; --none, and no roles, removes every role)');
      for (const r of roles) if (!ROLE.test(r)) throw new UsageError(`not a role name: "${r}"`);
      return withServices(p, io, async (svc) => {
        const u = await findUser(svc, name);
        const revoked = await revoking(svc, () => svc.users.setRoles(u, roles));
        io.out(`roles of ${u.username}: ${[...new Set(roles)].join(', ') || '(none)'}; ${revoked.length} session(s) revoked\n`);
        return 0;
      });
    }
    case 'disable':
    case 'enable': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, `${sub} NAME`);
      return withServices(p, io, async (svc) => {
        const u = await findUser(svc, name);
        const revoked = await revoking(svc, () => svc.users.setDisabled(u, sub === 'disable'));
        io.out(`${u.username} ${sub}d${sub === 'disable' ? `; ${revoked.length} session(s) revoked` : ''}\n`);
        return 0;
      });
    }
    case 'delete': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, 'delete NAME');
      return withServices(p, io, async (svc) => {
        const u = await findUser(svc, name);
        await revoking(svc, () => svc.users.delete(u));
        io.out(`deleted ${u.username}\n`);
        return 0;
      });
    }
    case 'passwd': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['password-stdin'] });
      const name = one(p, 'passwd NAME --password-stdin');
      const password = await readPassword(p, io);
      return withServices(p, io, async (svc) => {
        const u = await findUser(svc, name);
        const revoked = await revoking(svc, () => svc.users.setPassword(u, password));
        io.out(`password of ${u.username} changed; ${revoked.length} session(s) revoked\n`);
        return 0;
      });
    }
    case 'reset-2fa': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, 'reset-2fa NAME');
      return withServices(p, io, async (svc) => {
        const u = await findUser(svc, name);
        const codes = await svc.users.resetMfa(u);
        io.out(`two-factor authentication of ${u.username} reset (${codes} recovery codes removed)\n`);
        return 0;
      });
    }
    case 'unlock': {
      const p = parseArgs(rest, { valued: ['config'] });
      // Lockouts apply to unknown usernames too, so the name need not exist.
      const username = validateUsername(one(p, 'unlock NAME'));
      return withServices(p, io, async (svc) => {
        const known = await svc.users.find(username);
        let wasLocked: boolean;
        if (svc.state.backend === 'redis') {
          // Shared state: the lock lives in Redis, where every replica sees it cleared.
          await svc.connectState();
          wasLocked = await svc.users.unlock(username);
        } else {
          wasLocked = await unlockViaAdmin(svc.config, username);
        }
        io.out(`${username}: ${wasLocked ? 'unlocked' : 'was not locked'}${known ? '' : ' (no such user)'}\n`);
        return 0;
      });
    }
    default:
      throw new UsageError(USAGE);
  }
}

/**
 * Runs a change that revokes sessions. With Redis the revocations are broadcast to every
 * running replica at once; when Redis cannot be reached they still learn within a second from
 * the database (the services say so in one line).
 */
async function revoking<T>(svc: Services, change: () => Promise<T>): Promise<T> {
  await svc.connectState().catch(() => undefined);
  return change();
}

async function findUser(svc: Services, name: string): Promise<UserRecord> {
  const u = await svc.users.find(name);
  if (!u) throw new UsageError(`no user "${name.toLowerCase()}"`);
  return u;
}

function describe(u: UserRecord): Record<string, unknown> {
  return {
    id: u.id,
    username: u.username,
    email: u.email,
    roles: u.roles,
    disabled: u.disabled,
    mfa_enabled: u.mfaEnabled,
    created_at: u.createdAt.toISOString(),
    updated_at: u.updatedAt.toISOString(),
  };
}

function table(users: readonly UserRecord[]): string {
  const rows = users.map((u) => [u.username, u.roles.join(',') || '-', u.disabled ? 'disabled' : 'active', u.mfaEnabled ? '2fa' : '-', u.email ?? '-']);
  const head = ['USERNAME', 'ROLES', 'STATUS', 'MFA', 'EMAIL'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows]
    .map(
      (r) =>
        `${r
          .map((c, i) => c.padEnd(widths[i]))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}

async function readPassword(p: Parsed, io: Io): Promise<string> {
  if (!flag(p, 'password-stdin')) throw new UsageError('give the password on standard input with --password-stdin');
  const text = await io.stdin();
  return text.replace(/\r?\n$/, '');
}

/**
 * Clears a lockout held in a running gateway's in-process state, through its admin listener
 * (authenticated with the token the gateway wrote into the data directory).
 */
async function unlockViaAdmin(config: Config, username: string): Promise<boolean> {
  let found: { url: string; token: string };
  try {
    found = JSON.parse(readFileSync(join(config.data_dir, 'admin.token'), 'utf8'));
  } catch {
    throw new Error(`no running gateway found (no ${join(config.data_dir, 'admin.token')}); in-process lockouts end with the gateway process`);
  }
  const { url, token } = found;
  let res: Response;
  try {
    res = await fetch(`${url.replace('0.0.0.0', '127.0.0.1')}/unlock`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ username }),
      signal: AbortSignal.timeout(5000),
    });
  } catch {
    throw new Error(`no gateway answers on the admin listener ${url}; in-process lockouts end with the gateway process`);
  }
  if (res.status !== 200) throw new Error(`the gateway refused the unlock (HTTP ${res.status})`);
  return ((await res.json()) as { was_locked: boolean }).was_locked;
}
