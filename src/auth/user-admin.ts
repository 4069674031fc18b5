import { validateUsername } from './username.js';
import type { AuthService } from './login-flow.js';
import type { Lockout } from './lockout.js';
import type { MfaService } from './mfa.js';
import type { PasswordHasher } from './password.js';
import type { PasswordPolicy } from './policy.js';
import type { Database, UserRecord } from '../store/ports.js';

export interface UserAdminDeps {
  db: Database;
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  auth: AuthService;
  mfa: MfaService;
  lockout: Lockout;
  now: () => Date;
}

/**
 * Account administration (the `portcullis user …` commands): the same rules as the gateway's
 * own endpoints. The password policy applies, and every change that a token carries or that
 * ends the account's right to a session (roles, disable, delete, password) revokes the
 * account's sessions through the one revocation path: durably, locally, and to every replica.
 * Database calls are not given sign-in's short deadline: an administrator's command may wait
 * for a slow database, and its errors reach the command as they are.
 */
export class UserAdmin {
  constructor(private readonly d: UserAdminDeps) {}

  /** The account of a username (case-insensitive), or undefined. Throws for an invalid name. */
  find(name: string): Promise<UserRecord | undefined> {
    return this.d.db.users.findByUsername(validateUsername(name));
  }

  list(): Promise<UserRecord[]> {
    return this.d.db.users.list();
  }

  /** How many sessions of the account are live now. */
  async activeSessions(user: UserRecord): Promise<number> {
    return (await this.d.db.sessions.listActive(user.id, this.d.now())).length;
  }

  /** Creates an account; the password policy applies. */
  async add(input: { username: string; email: string | null; roles: readonly string[]; password: string }): Promise<UserRecord> {
    const username = validateUsername(input.username);
    this.d.policy.assert(input.password, { username, email: input.email });
    const passwordHash = await this.d.hasher.hash(input.password);
    return this.d.db.users.create({ username, email: input.email, roles: [...new Set(input.roles)], passwordHash });
  }

  /** Replaces the roles; tokens carry roles, so the account's sessions end (revoked ids returned). */
  async setRoles(user: UserRecord, roles: readonly string[]): Promise<string[]> {
    await this.d.db.users.update(user.id, { roles: [...new Set(roles)] });
    return this.d.auth.revokeUserSessions(user.id, 'roles_changed');
  }

  /** Disables (sessions revoked) or enables an account. */
  async setDisabled(user: UserRecord, disabled: boolean): Promise<string[]> {
    await this.d.db.users.update(user.id, { disabled });
    return disabled ? this.d.auth.revokeUserSessions(user.id, 'user_disabled') : [];
  }

  /** Deletes an account after revoking its sessions. */
  async delete(user: UserRecord): Promise<void> {
    await this.d.auth.revokeUserSessions(user.id, 'user_deleted');
    await this.d.db.users.delete(user.id);
  }

  /** Sets a new password (policy applies); every session of the account ends. */
  async setPassword(user: UserRecord, password: string): Promise<string[]> {
    this.d.policy.assert(password, { username: user.username, email: user.email });
    const passwordHash = await this.d.hasher.hash(password);
    await this.d.db.users.update(user.id, { passwordHash });
    return this.d.auth.revokeUserSessions(user.id, 'password_changed');
  }

  /** Turns 2FA off: secret and recovery codes gone (the number of codes removed is returned). */
  resetMfa(user: UserRecord): Promise<number> {
    return this.d.mfa.reset(user.id);
  }

  /** Clears a lockout held in the state store this process uses (any username, known or not). */
  unlock(name: string): Promise<boolean> {
    return this.d.lockout.unlock(validateUsername(name));
  }
}
