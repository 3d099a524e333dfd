import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { packageRoot } from '../src/packageRoot';
import { ADMIN_TOKEN, newAccountId } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { ServerProcess } from './helpers/serverProcess';
import { type ProcessRun, runProcess } from './helpers/runProcess';

const ROOT = packageRoot();
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const VERIFIER_TOKEN = 'test-verifier-token-0123456789';

function runCli(args: readonly string[], env: Record<string, string | undefined> = {}, input = ''): Promise<ProcessRun> {
  const fullEnv: Record<string, string> = { PATH: process.env.PATH ?? '' };
  for (const [name, value] of Object.entries(env)) if (value !== undefined) fullEnv[name] = value;
  return runProcess(process.execPath, [CLI, ...args], { cwd: ROOT, env: fullEnv, input });
}

/** script(1), which runs a command on a pseudo-terminal of its own, when installed. */
function scriptCommand(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir !== '' && existsSync(path.join(dir, 'script'))) return path.join(dir, 'script');
  }
  return undefined;
}

/**
 * Runs the CLI on a terminal (script(1)'s pseudo-terminal), typing `input`;
 * resolves with the exit code and everything the terminal showed (stdout and
 * stderr together). Killed after 15 s: script waits for input that never ends.
 */
function runOnTerminal(args: readonly string[], env: Record<string, string | undefined>, input: string): Promise<ProcessRun> {
  const command = [process.execPath, CLI, ...args].map((word) => `'${word.replace(/'/g, `'\\''`)}'`).join(' ');
  const fullEnv: Record<string, string> = { PATH: process.env.PATH ?? '' };
  for (const [name, value] of Object.entries(env)) if (value !== undefined) fullEnv[name] = value;
  return new Promise((resolve, reject) => {
    const child = spawn(scriptCommand() as string, ['-qec', command, '/dev/null'], { cwd: ROOT, env: fullEnv, stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr: '' }));
    child.stdin.write(input);
  });
}

/** Asserts a failure printed as one line matching `message` on stderr, nothing on stdout, no stack trace. */
function assertOneLineError(run: ProcessRun, exitCode: number, message: RegExp): void {
  assert.equal(run.code, exitCode, `exit code; stderr: ${run.stderr}`);
  assert.equal(run.stdout, '');
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
  const lines = run.stderr.split('\n').filter((line) => line !== '');
  assert.equal(lines.length, 1, `one line: ${run.stderr}`);
  assert.match(lines[0] as string, message);
}

/** Asserts a command-line mistake reported by commander: exit 2, `error: …` first, no stack trace. */
function assertUsageError(run: ProcessRun, message: RegExp): void {
  assert.equal(run.code, 2, `exit code; stderr: ${run.stderr}`);
  assert.equal(run.stdout, '');
  assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
  assert.match(run.stderr.split('\n')[0] as string, message);
}

function parseJson(run: ProcessRun): Record<string, unknown> {
  assert.equal(run.code, 0, run.stderr);
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

describe('the keyward command', () => {
  let server: ServerProcess;
  /** The environment of a CLI run against `server`. */
  let env: Record<string, string | undefined>;

  before(async () => {
    server = await ServerProcess.start({ KEYWARD_VERIFIER_TOKEN: VERIFIER_TOKEN });
    env = { KEYWARD_ADDR: server.address, KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN, KEYWARD_VERIFIER_TOKEN: VERIFIER_TOKEN };
  });

  after(async () => {
    assert.equal(await server.stop(), 0);
    await assertNoLeaks();
  });

  /** Creates a key with the CLI (--json) and returns its id and secret. */
  async function createKey(accountId: string, ...extra: string[]): Promise<{ id: string; secret: string }> {
    const created = parseJson(await runCli(['keys', 'create', '--account', accountId, '--name', 'cli key', '--env', 'live', '--scope', 'jobs:read', '--json', ...extra], env));
    return { id: (created.key as { id: string }).id, secret: created.secret as string };
  }

  async function showKey(accountId: string, keyId: string): Promise<Record<string, unknown>> {
    return parseJson(await runCli(['keys', 'show', keyId, '--account', accountId, '--json'], env)).key as Record<string, unknown>;
  }

  describe('keys create', () => {
    it('prints the secret alone on stdout, and on stderr the key and that the secret will not be shown again', async () => {
      const accountId = newAccountId();
      const run = await runCli(
        ['keys', 'create', '--account', accountId, '--name', 'CRM integration', '--env', 'test', '--scope', 'jobs:read', 'jobs:write', '--scope', 'customers:read', '--ip', '203.0.113.7/24', '--expires', '2099-01-31'],
        env,
      );
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^fsm_test_[0-9A-Za-z]{49}\n$/);
      assert.match(run.stderr, /will not be shown again/);
      assert.match(run.stderr, /^scopes +jobs:read jobs:write customers:read$/m);
      assert.match(run.stderr, /^ip whitelist +203\.0\.113\.0\/24$/m);
      assert.match(run.stderr, /^expires +2099-01-31T00:00:00Z$/m);
      assert.ok(!run.stderr.includes(run.stdout.trim()), 'the secret only on stdout');
    });

    it('prints the key and the secret as one JSON document with --json', async () => {
      const accountId = newAccountId();
      const run = await runCli(['keys', 'create', '--json', '--account', accountId, '--name', 'n', '--env', 'live', '--scope', 'jobs:read,technicians:read', '--expires', '30d'], env);
      const created = parseJson(run);
      assert.match(created.secret as string, /^fsm_live_[0-9A-Za-z]{49}$/);
      const key = created.key as Record<string, unknown>;
      assert.deepEqual([key.accountId, key.name, key.environment, key.status, key.scopes, key.ipWhitelist], [accountId, 'n', 'ENVIRONMENT_LIVE', 'active', ['jobs:read', 'technicians:read'], []]);
      const expiresInDays = (Date.parse(key.expiresAt as string) - Date.now()) / 86_400_000;
      assert.ok(expiresInDays > 29.9 && expiresInDays <= 30, `expires in ${expiresInDays} days`);
      assert.match(run.stderr, /will not be shown again/);
    });

    it('reports an unknown scope or a bad CIDR as the server names it, on one line, exit 1, creating nothing', async () => {
      const accountId = newAccountId();
      const base = ['keys', 'create', '--account', accountId, '--name', 'n', '--env', 'live'];
      assertOneLineError(await runCli([...base, '--scope', 'jobs:read', 'x'], env), 1, /^error: INVALID_ARGUMENT: scopes\[1\] "x": unknown scope; known scopes: jobs:read, /);
      assertOneLineError(
        await runCli([...base, '--scope', 'jobs:read', '--ip', '10.0.0.0/40'], env),
        1,
        /^error: INVALID_ARGUMENT: ip_whitelist\[0\] "10\.0\.0\.0\/40": not an IP address or CIDR range/,
      );
      assert.deepEqual(parseJson(await runCli(['keys', 'list', '--account', accountId, '--json'], env)), { keys: [] });
    });

    it('refuses a bad command line before calling: exit 2', async () => {
      const accountId = newAccountId();
      assertUsageError(await runCli(['keys', 'create', '--account', accountId, '--name', 'n', '--env', 'prod', '--scope', 'jobs:read'], env), /^error: option '--env <environment>' argument 'prod' is invalid/);
      assertUsageError(await runCli(['keys', 'create', '--account', accountId, '--name', 'n', '--env', 'live'], env), /^error: required option '--scope <scope\.\.\.>' not specified/);
      assertOneLineError(
        await runCli(['keys', 'create', '--account', accountId, '--name', 'n', '--env', 'live', '--scope', 'jobs:read', '--expires', 'next tuesday'], env),
        2,
        /^error: --expires "next tuesday": not a date/,
      );
      assertUsageError(await runCli(['keys', 'frobnicate'], env), /^error: unknown command 'frobnicate'/);
    });
  });

  describe('keys list and show', () => {
    it('lists an account as a table and as JSON, revoked keys on request', async () => {
      const accountId = newAccountId();
      const first = await createKey(accountId);
      const second = await createKey(accountId, '--ip', '2001:db8::1');
      assert.equal((await runCli(['keys', 'revoke', first.id, '--account', accountId, '--yes'], env)).code, 0);

      const table = await runCli(['keys', 'list', '--account', accountId], env);
      assert.equal(table.code, 0, table.stderr);
      const lines = table.stdout.trimEnd().split('\n');
      assert.match(lines[0] as string, /^ID +NAME +ENV +KEY +STATUS +SCOPES +IP WHITELIST +LAST USED$/);
      assert.equal(lines.length, 2);
      assert.match(lines[1] as string, new RegExp(`^${second.id} +cli key +live +fsm_live_\\w{4}…\\w{4} +active +jobs:read +2001:db8::1 +never$`));

      const all = parseJson(await runCli(['keys', 'list', '--account', accountId, '--include-revoked', '--json'], env)).keys as Array<Record<string, unknown>>;
      assert.deepEqual(all.map((key) => [key.id, key.status]), [[second.id, 'active'], [first.id, 'revoked']]);
      assert.ok(!JSON.stringify(all).includes(second.secret), 'no secret in a listing');

      const none = await runCli(['keys', 'list', '--account', newAccountId()], env);
      assert.deepEqual([none.code, none.stdout], [0, 'no keys\n']);
    });

    it('shows one key, field by field or as JSON; another account sees NOT_FOUND', async () => {
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      const shown = await runCli(['keys', 'show', id, '--account', accountId], env);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, new RegExp(`^id +${id}\naccount +${accountId}\nname +cli key\nenvironment +live\nkey +fsm_live_\\w{4}…\\w{4}\nstatus +active\n`));
      assert.match(shown.stdout, /^ip whitelist +any address$/m);
      assert.match(shown.stdout, /^uses +0 \(0 refused\)$/m);
      assert.equal((await showKey(accountId, id)).requestCount, '0');

      assertOneLineError(await runCli(['keys', 'show', id, '--account', newAccountId()], env), 1, /^error: NOT_FOUND: key_id "[0-9a-f-]{36}": no such key in account_id/);
      assertOneLineError(await runCli(['keys', 'show', 'not-a-uuid', '--account', accountId], env), 1, /^error: INVALID_ARGUMENT: key_id "not-a-uuid"/);
      assertUsageError(await runCli(['keys', 'show', id], env), /^error: required option '--account <id>' not specified/);
    });
  });

  describe('keys scopes and keys whitelist', () => {
    it('sets, adds and removes scopes', async () => {
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      const scopes = async (...args: string[]): Promise<unknown> =>
        (parseJson(await runCli(['keys', 'scopes', ...args, '--account', accountId, '--json'], env)).key as { scopes: unknown }).scopes;

      assert.deepEqual(await scopes('set', id, 'jobs:write', 'customers:read'), ['jobs:write', 'customers:read']);
      assert.deepEqual(await scopes('add', id, 'jobs:read,technicians:read', 'jobs:write'), ['jobs:read', 'jobs:write', 'customers:read', 'technicians:read']);
      assert.deepEqual(await scopes('remove', id, 'jobs:write', 'technicians:read'), ['jobs:read', 'customers:read']);

      const human = await runCli(['keys', 'scopes', 'add', id, 'assets:read', '--account', accountId], env);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^scopes +jobs:read customers:read assets:read$/m);

      assertOneLineError(await runCli(['keys', 'scopes', 'add', id, 'jobs:delete', '--account', accountId], env), 1, /^error: INVALID_ARGUMENT: scopes\[\d\] "jobs:delete": unknown scope/);
      assertOneLineError(await runCli(['keys', 'scopes', 'remove', id, 'webhooks:manage', '--account', accountId], env), 1, /^error: key [0-9a-f-]{36} does not have webhooks:manage \(it has jobs:read, customers:read, assets:read\)$/);
      assertOneLineError(await runCli(['keys', 'scopes', 'remove', id, 'jobs:read', 'customers:read', 'assets:read', '--account', accountId], env), 1, /^error: INVALID_ARGUMENT: scopes/);
      assert.deepEqual((await showKey(accountId, id)).scopes, ['jobs:read', 'customers:read', 'assets:read']);
    });

    it('sets, adds, removes and clears whitelist entries', async () => {
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      const whitelist = async (...args: string[]): Promise<unknown> =>
        (parseJson(await runCli(['keys', 'whitelist', ...args, '--account', accountId, '--json'], env)).key as { ipWhitelist: unknown }).ipWhitelist;

      assert.deepEqual(await whitelist('set', id, '203.0.113.7/24', '2001:db8::1'), ['203.0.113.0/24', '2001:db8::1']);
      assert.deepEqual(await whitelist('add', id, '198.51.100.7'), ['203.0.113.0/24', '2001:db8::1', '198.51.100.7']);
      assert.deepEqual(await whitelist('remove', id, '2001:db8::1'), ['203.0.113.0/24', '198.51.100.7']);

      assertOneLineError(
        await runCli(['keys', 'whitelist', 'add', id, '300.1.2.3', '--account', accountId], env),
        1,
        /^error: INVALID_ARGUMENT: ip_whitelist\[2\] "300\.1\.2\.3": not an IP address or CIDR range/,
      );
      assertOneLineError(
        await runCli(['keys', 'whitelist', 'remove', id, '203.0.113.7/24', '--account', accountId], env),
        1,
        /^error: the whitelist of key [0-9a-f-]{36} has no entry 203\.0\.113\.7\/24 \(it has 203\.0\.113\.0\/24, 198\.51\.100\.7\)$/,
      );

      const cleared = await runCli(['keys', 'whitelist', 'clear', id, '--account', accountId], env);
      assert.equal(cleared.code, 0, cleared.stderr);
      assert.match(cleared.stdout, /^ip whitelist +any address$/m);
      assert.deepEqual((await showKey(accountId, id)).ipWhitelist, []);
    });
  });

  describe('keys create --meta and keys update', () => {
    it('creates with metadata, then changes only what the flags name; show and verify print the metadata', async () => {
      const accountId = newAccountId();
      const { id, secret } = await createKey(accountId, '--meta', 'integration=crm', 'note=a=b, c', '--expires', '90d');
      assert.deepEqual((await showKey(accountId, id)).metadata, { integration: 'crm', note: 'a=b, c' });
      const shown = await runCli(['keys', 'show', id, '--account', accountId], env);
      assert.match(shown.stdout, /^metadata +integration=crm note="a=b, c"$/m);

      const renamed = await runCli(['keys', 'update', id, '--account', accountId, '--name', 'renamed'], env);
      assert.equal(renamed.code, 0, renamed.stderr);
      assert.match(renamed.stdout, /^name +renamed$/m);
      assert.match(renamed.stdout, /^metadata +integration=crm note="a=b, c"$/m);
      assert.match(renamed.stdout, /^expires +\d{4}-/m);

      const tagged = parseJson(await runCli(['keys', 'update', id, '--account', accountId, '--meta', 'team=ops', '--no-expiry', '--json'], env)).key as Record<string, unknown>;
      assert.deepEqual([tagged.name, tagged.metadata, tagged.expiresAt], ['renamed', { team: 'ops' }, null]);
      const extended = parseJson(await runCli(['keys', 'update', id, '--account', accountId, '--expires', '2099-01-31', '--json'], env)).key as Record<string, unknown>;
      assert.equal(extended.expiresAt, '2099-01-31T00:00:00.000Z');

      const verdict = await runCli(['verify', '--key', secret], env);
      assert.equal(verdict.code, 0, verdict.stderr);
      assert.match(verdict.stdout, /^key name +renamed$/m);
      assert.match(verdict.stdout, /^metadata +team=ops$/m);
      const verdictJson = parseJson(await runCli(['verify', '--key', secret, '--json'], env));
      assert.deepEqual(verdictJson.metadata, { team: 'ops' });

      const cleared = parseJson(await runCli(['keys', 'update', id, '--account', accountId, '--clear-meta', '--json'], env)).key as Record<string, unknown>;
      assert.deepEqual(cleared.metadata, {});
      assert.match((await runCli(['keys', 'show', id, '--account', accountId], env)).stdout, /^metadata +-$/m);
    });

    it('refuses an update with nothing to change, conflicting flags or a bad entry before calling (exit 2); the server names a bad metadata entry (exit 1)', async () => {
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      assertOneLineError(await runCli(['keys', 'update', id, '--account', accountId], env), 2, /nothing to change/);
      assert.equal((await runCli(['keys', 'update', id, '--account', accountId, '--expires', '90d', '--no-expiry'], env)).code, 2);
      assert.equal((await runCli(['keys', 'update', id, '--account', accountId, '--meta', 'a=1', '--clear-meta'], env)).code, 2);
      assertOneLineError(await runCli(['keys', 'update', id, '--account', accountId, '--meta', 'novalue'], env), 2, /--meta "novalue": not key=value/);
      assertOneLineError(
        await runCli(['keys', 'update', id, '--account', accountId, '--meta', 'Bad Key=v'], env),
        1,
        /^error: INVALID_ARGUMENT: metadata\["Bad Key"\]: the key must be/,
      );
      assert.equal((await showKey(accountId, id)).name, 'cli key');
    });
  });

  describe('keys rotate', () => {
    it('prints the new secret alone on stdout once; the old key stops at once, or after --grace; show names rotated from and replaced by', async () => {
      const accountId = newAccountId();
      const { id, secret } = await createKey(accountId, '--meta', 'team=ops');

      const run = await runCli(['keys', 'rotate', id, '--account', accountId], env);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^fsm_live_[0-9A-Za-z]{49}\n$/);
      const newSecret = run.stdout.trim();
      assert.match(run.stderr, /will not be shown again/);
      assert.match(run.stderr, new RegExp(`key ${id} is revoked\\.$`, 'm'));
      assert.match(run.stderr, new RegExp(`^rotated from +${id}$`, 'm'));
      assert.ok(!run.stderr.includes(newSecret), 'the secret only on stdout');
      const newId = /^id +([0-9a-f-]{36})$/m.exec(run.stderr)?.[1] as string;

      const old = await runCli(['keys', 'show', id, '--account', accountId], env);
      assert.match(old.stdout, new RegExp(`^replaced by +${newId}$`, 'm'));
      assert.match(old.stdout, /^status +revoked$/m);
      const fresh = await showKey(accountId, newId);
      assert.deepEqual([fresh.name, fresh.metadata, fresh.rotatedFromKeyId, fresh.replacedByKeyId], ['cli key', { team: 'ops' }, id, null]);
      assert.equal((await showKey(accountId, id)).replacedByKeyId, newId);
      assert.equal((await runCli(['verify', '--key', secret], env)).code, 3);
      assert.equal((await runCli(['verify', '--key', newSecret], env)).code, 0);

      // With --grace and --json: the old key keeps working, with an expiry about 24 hours away.
      const graced = parseJson(await runCli(['keys', 'rotate', newId, '--account', accountId, '--grace', '24h', '--json'], env));
      assert.match(graced.secret as string, /^fsm_live_[0-9A-Za-z]{49}$/);
      assert.equal((graced.key as Record<string, unknown>).rotatedFromKeyId, newId);
      const expires = new Date(String((await showKey(accountId, newId)).expiresAt)).getTime();
      assert.ok(Math.abs(expires - (Date.now() + 86_400_000)) < 60_000, `expires ${expires}`);
      assert.equal((await runCli(['verify', '--key', newSecret], env)).code, 0);
    });

    it('reports a key already replaced, a bad --grace and one over the maximum', async () => {
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      assert.equal((await runCli(['keys', 'rotate', id, '--account', accountId, '--grace', '1h'], env)).code, 0);
      assertOneLineError(
        await runCli(['keys', 'rotate', id, '--account', accountId], env),
        1,
        new RegExp(`^error: FAILED_PRECONDITION: key_id "${id}": the key was already replaced by key "[0-9a-f-]{36}"`),
      );
      assertOneLineError(await runCli(['keys', 'rotate', id, '--account', newAccountId()], env), 1, /^error: NOT_FOUND: key_id "[0-9a-f-]{36}": no such key/);
      const other = (await createKey(accountId)).id;
      assertUsageError(await runCli(['keys', 'rotate', other, '--account', accountId, '--grace', 'soon'], env), /^error: --grace "soon": not a duration/);
      assertOneLineError(await runCli(['keys', 'rotate', other, '--account', accountId, '--grace', '31d'], env), 1, /^error: INVALID_ARGUMENT: grace_period "2678400s 0ns": must be at most 30 days/);
      assert.equal((await showKey(accountId, other)).replacedByKeyId, null);
    });
  });

  describe('keys disable and keys enable', () => {
    it('disable a key (Verify refuses it, show and list say so) and enable it again; both changes nothing when repeated', async () => {
      const accountId = newAccountId();
      const { id, secret } = await createKey(accountId);

      const disabled = await runCli(['keys', 'disable', id, '--account', accountId], env);
      assert.equal(disabled.code, 0, disabled.stderr);
      assert.match(disabled.stdout, /^status +disabled$/m);
      assert.match(disabled.stdout, /^disabled +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/m);
      const shown = await showKey(accountId, id);
      assert.equal(shown.status, 'disabled');
      assert.match(String(shown.disabledAt), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      const again = parseJson(await runCli(['keys', 'disable', id, '--account', accountId, '--json'], env)).key as Record<string, unknown>;
      assert.equal(again.disabledAt, shown.disabledAt, 'disabling a disabled key changes nothing');

      const table = await runCli(['keys', 'list', '--account', accountId], env);
      assert.match(table.stdout.trimEnd().split('\n')[1] as string, new RegExp(`^${id} +cli key +live +fsm_live_\\w{4}…\\w{4} +disabled +`));

      const verdict = await runCli(['verify', '--key', secret], env);
      assert.equal(verdict.code, 3, verdict.stderr);
      assert.match(verdict.stdout, /^http status +401\ncode +VERIFY_CODE_DISABLED\nwhy +the key is disabled/m);

      const enabled = parseJson(await runCli(['keys', 'enable', id, '--account', accountId, '--json'], env)).key as Record<string, unknown>;
      assert.deepEqual([enabled.status, enabled.disabledAt], ['active', null]);
      const human = await runCli(['keys', 'enable', id, '--account', accountId], env);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^status +active$/m);
      assert.match(human.stdout, /^disabled +-$/m);
      assert.equal((await runCli(['verify', '--key', secret], env)).code, 0);
    });

    it('report a revoked key, another account\'s key and a missing --account as for every other command', async () => {
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      assert.equal((await runCli(['keys', 'revoke', id, '--account', accountId, '--yes'], env)).code, 0);
      for (const command of ['disable', 'enable']) {
        assertOneLineError(
          await runCli(['keys', command, id, '--account', accountId], env),
          1,
          new RegExp(`^error: FAILED_PRECONDITION: key_id "${id}": the key is revoked; a revoked key cannot be ${command}d$`),
        );
        assertOneLineError(await runCli(['keys', command, id, '--account', newAccountId()], env), 1, /^error: NOT_FOUND: key_id "[0-9a-f-]{36}": no such key in account_id/);
        assertUsageError(await runCli(['keys', command, id], env), /^error: required option '--account <id>' not specified/);
      }
      assert.equal((await showKey(accountId, id)).disabledAt, null);
    });
  });

  describe('keys events', () => {
    it("prints an account's or a key's audit trail, newest first, as a table or JSON, every page or --limit", async () => {
      const accountId = newAccountId();
      const { id, secret } = await createKey(accountId, '--ip', '10.0.0.0/8');
      assert.equal((await runCli(['keys', 'scopes', 'set', id, 'jobs:read,jobs:write', '--account', accountId], env)).code, 0);
      assert.equal((await runCli(['keys', 'disable', id, '--account', accountId], env)).code, 0);
      const other = await createKey(accountId);

      const table = await runCli(['keys', 'events', id, '--account', accountId], env);
      assert.equal(table.code, 0, table.stderr);
      const lines = table.stdout.trimEnd().split('\n');
      assert.match(lines[0] as string, /^TIME +ACTION +ACTOR +ADDRESS +CHANGES$/);
      assert.equal(lines.length, 4);
      assert.match(lines[1] as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +disable +default +127\.0\.0\.1 +disabled_at: null → "\d{4}-[^"]+Z"$/);
      assert.match(lines[2] as string, / scopes +default +127\.0\.0\.1 +scopes: \["jobs:read"\] → \["jobs:read","jobs:write"\]$/);
      assert.match(lines[3] as string, / create +default +127\.0\.0\.1 +name: "cli key"; environment: "live"; scopes: \["jobs:read"\]; ip_whitelist: \["10\.0\.0\.0\/8"\]; expires_at: null; metadata: \{\}$/);
      assert.ok(!table.stdout.includes(secret.slice(9)));

      const whole = parseJson(await runCli(['keys', 'events', '--account', accountId, '--json'], env)).events as Array<Record<string, unknown>>;
      assert.deepEqual(whole.map((event) => [event.keyId, event.action, event.actor, event.clientAddress]), [
        [other.id, 'KEY_ACTION_CREATE', 'default', '127.0.0.1'],
        [id, 'KEY_ACTION_DISABLE', 'default', '127.0.0.1'],
        [id, 'KEY_ACTION_SCOPES', 'default', '127.0.0.1'],
        [id, 'KEY_ACTION_CREATE', 'default', '127.0.0.1'],
      ]);
      assert.deepEqual(whole[2]?.changes, [{ field: 'scopes', before: ['jobs:read'], after: ['jobs:read', 'jobs:write'] }]);
      const accountTable = await runCli(['keys', 'events', '--account', accountId], env);
      assert.match(accountTable.stdout.split('\n')[0] as string, /^TIME +KEY +ACTION +ACTOR +ADDRESS +CHANGES$/);

      const limited = parseJson(await runCli(['keys', 'events', '--account', accountId, '--limit', '3', '--json'], env)).events as Array<Record<string, unknown>>;
      assert.deepEqual(limited.map((event) => event.id), whole.slice(0, 3).map((event) => event.id));
      assert.equal((await runCli(['keys', 'events', '--account', newAccountId()], env)).stdout, 'no events\n');
      assert.equal((await runCli(['keys', 'events', id, '--account', newAccountId()], env)).stdout, 'no events\n');
      assertOneLineError(await runCli(['keys', 'events', '--account', accountId, '--limit', '0'], env), 2, /^error: --limit "0": not a whole number/);
      assertOneLineError(await runCli(['keys', 'events', 'nope', '--account', accountId], env), 1, /^error: INVALID_ARGUMENT: key_id "nope"/);
    });
  });

  describe('keys revoke', () => {
    it('refuses without --yes when stdin is not a terminal, and revokes with it', async () => {
      const accountId = newAccountId();
      const { id, secret } = await createKey(accountId);
      assertOneLineError(await runCli(['keys', 'revoke', id, '--account', accountId], env, 'y\n'), 2, /^error: refusing to revoke [0-9a-f-]{36} without --yes: stdin is not a terminal/);
      assert.equal((await showKey(accountId, id)).status, 'active');

      const revoked = await runCli(['keys', 'revoke', id, '--account', accountId, '--yes'], env);
      assert.equal(revoked.code, 0, revoked.stderr);
      assert.match(revoked.stdout, /^status +revoked$/m);
      assert.match(revoked.stdout, /^revoked +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/m);
      assert.ok((await showKey(accountId, id)).revokedAt !== null);

      const verdict = await runCli(['verify', '--key', secret], env);
      assert.equal(verdict.code, 3, verdict.stderr);
      assert.match(verdict.stdout, /^code +VERIFY_CODE_REVOKED$/m);

      assertOneLineError(await runCli(['keys', 'scopes', 'set', id, 'jobs:write', '--account', accountId], env), 1, /^error: FAILED_PRECONDITION: key_id "[0-9a-f-]{36}": the key is revoked/);
    });
    it('asks on a terminal, and revokes only on yes', async () => {
      assert.ok(scriptCommand() !== undefined, 'script(1) (util-linux, on every Debian) gives the command a terminal; install it');
      const accountId = newAccountId();
      const { id } = await createKey(accountId);
      const declined = await runOnTerminal(['keys', 'revoke', id, '--account', accountId], env, 'n\n');
      assert.equal(declined.code, 1, declined.stdout);
      assert.match(declined.stdout, new RegExp(`Revoke ${id} "cli key" \\(fsm_live_\\w{4}…\\w{4}\\) of account ${accountId}\\? This cannot be undone\\. \\[y/N\\]`));
      assert.match(declined.stdout, /error: not revoked/);
      assert.equal((await showKey(accountId, id)).status, 'active');

      const accepted = await runOnTerminal(['keys', 'revoke', id, '--account', accountId], env, 'yes\n');
      assert.equal(accepted.code, 0, accepted.stdout);
      assert.equal((await showKey(accountId, id)).status, 'revoked');
    });
  });

  describe('verify', () => {
    it('prints the verdict, the HTTP status and why; exit 0 when valid, 3 when refused', async () => {
      const accountId = newAccountId();
      const { id, secret } = await createKey(accountId, '--ip', '203.0.113.0/24');

      const ok = await runCli(['verify', '--key', secret, '--ip', '203.0.113.9', '--scope', 'jobs:read'], env);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^verdict +valid\nhttp status +200\ncode +VERIFY_CODE_OK\nwhy +the key may proceed\nkey id +[0-9a-f-]{36}\n/);
      assert.match(ok.stdout, new RegExp(`^key id +${id}$`, 'm'));

      const outside = await runCli(['verify', '--key', secret, '--ip', '198.51.100.1'], env);
      assert.equal(outside.code, 3);
      assert.match(outside.stdout, /^verdict +refused\nhttp status +403\ncode +VERIFY_CODE_IP_NOT_ALLOWED\nwhy +the client address is outside/);

      const fromStdin = await runCli(['verify', '--json', '--key', '-', '--ip', '203.0.113.9', '--scope', 'jobs:read,customers:write'], env, `${secret}\n`);
      assert.equal(fromStdin.code, 3, fromStdin.stderr);
      const scope = JSON.parse(fromStdin.stdout) as Record<string, unknown>;
      assert.deepEqual(
        [scope.valid, scope.code, scope.httpStatus, scope.reason, scope.missingScopes, scope.keyId],
        [false, 'VERIFY_CODE_INSUFFICIENT_SCOPE', 403, 'the key lacks scope customers:write', ['customers:write'], id],
      );

      const garbage = await runCli(['verify', '--key', 'fsm_live_nope', '--json'], env);
      assert.equal(garbage.code, 3);
      const invalid = JSON.parse(garbage.stdout) as Record<string, unknown>;
      assert.deepEqual([invalid.code, invalid.httpStatus, invalid.keyId], ['VERIFY_CODE_INVALID_KEY', 401, '']);
    });

    it('sends the verifier token, not the admin one', async () => {
      const { secret } = await createKey(newAccountId());
      assertOneLineError(await runCli(['verify', '--key', secret], { ...env, KEYWARD_VERIFIER_TOKEN: undefined }), 1, /^error: UNAUTHENTICATED: /);
      assertOneLineError(await runCli(['verify', '--key', secret, '--token', ADMIN_TOKEN], env), 1, /^error: UNAUTHENTICATED: /);
      assert.equal((await runCli(['verify', '--key', secret, '--token', VERIFIER_TOKEN], { ...env, KEYWARD_VERIFIER_TOKEN: undefined })).code, 0);
      assertOneLineError(await runCli(['verify', '--key', secret, '--scope', 'jobs:delete'], env), 1, /^error: INVALID_ARGUMENT: required_scopes\[0\] "jobs:delete"/);
    });
  });

  describe('connection settings', () => {
    let dir: string;

    before(() => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'keyward-cli-'));
    });

    after(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    it('takes the address from --addr and the token from --token-file or --token, flags before or after the command', async () => {
      const accountId = newAccountId();
      const tokenFile = path.join(dir, 'admin-token');
      writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`);
      const flags = ['--addr', server.address, '--token-file', tokenFile];
      assert.deepEqual(parseJson(await runCli([...flags, 'keys', 'list', '--account', accountId, '--json'])), { keys: [] });
      assert.deepEqual(parseJson(await runCli(['keys', 'list', '--account', accountId, '--json', ...flags])), { keys: [] });
      assert.deepEqual(parseJson(await runCli(['keys', 'list', '--account', accountId, '--json', '--addr', server.address, '--token', ADMIN_TOKEN])), { keys: [] });
    });

    it('says what is wrong with the token or the address, on one line', async () => {
      const accountId = newAccountId();
      const list = ['keys', 'list', '--account', accountId];
      assertOneLineError(await runCli(list, { KEYWARD_ADDR: server.address }), 2, /^error: no admin token: pass --token-file FILE, set KEYWARD_ADMIN_TOKEN, or pass --token$/);
      assertOneLineError(await runCli([...list, '--token', 'wrong-token-0123456789'], { KEYWARD_ADDR: server.address }), 1, /^error: UNAUTHENTICATED: .*\(check --token/);
      assertOneLineError(await runCli([...list, '--token-file', path.join(dir, 'missing')], { KEYWARD_ADDR: server.address }), 2, /^error: cannot read --token-file .*missing: ENOENT$/);
      assertOneLineError(await runCli([...list, '--addr', '127.0.0.1:1', '--deadline-ms', '3000'], env), 1, /^error: UNAVAILABLE: .*ECONNREFUSED.*\(check --addr/);
      assertOneLineError(await runCli([...list, '--deadline-ms', 'soon'], env), 2, /^error: --deadline-ms "soon": not a positive whole number/);
    });

    it('speaks mutual TLS with --tls-ca, --tls-cert and --tls-key', async () => {
      const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
      const newKey = (name: string): string[] => ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`];
      openssl('req', '-x509', ...newKey('ca'), '-out', 'ca.crt', '-days', '2', '-subj', '/CN=keyward cli test CA');
      for (const [name, extensions] of [
        ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'],
        ['client', 'extendedKeyUsage=clientAuth\n'],
      ] as const) {
        openssl('req', '-new', ...newKey(name), '-out', `${name}.csr`, '-subj', `/CN=keyward-cli-${name}`);
        writeFileSync(path.join(dir, `${name}.ext`), extensions);
        openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`);
      }
      const file = (name: string): string => path.join(dir, name);
      const tlsServer = await ServerProcess.start({
        KEYWARD_TLS_CERT_FILE: file('server.crt'),
        KEYWARD_TLS_KEY_FILE: file('server.key'),
        KEYWARD_TLS_CLIENT_CA_FILE: file('ca.crt'),
      });
      try {
        const tlsEnv = { KEYWARD_ADDR: tlsServer.address, KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN };
        const accountId = newAccountId();
        const list = ['keys', 'list', '--account', accountId, '--json', '--deadline-ms', '3000'];
        const mutual = ['--tls-ca', file('ca.crt'), '--tls-cert', file('client.crt'), '--tls-key', file('client.key')];
        assert.deepEqual(parseJson(await runCli([...list, ...mutual], tlsEnv)), { keys: [] });
        assertOneLineError(await runCli([...list, '--tls-ca', file('ca.crt')], tlsEnv), 1, /^error: UNAVAILABLE: /);
        assertOneLineError(await runCli(list, tlsEnv), 1, /^error: UNAVAILABLE: /);
        assertOneLineError(await runCli([...list, '--tls-ca', file('ca.crt'), '--tls-cert', file('client.crt')], tlsEnv), 2, /^error: give --tls-cert and --tls-key together/);
      } finally {
        assert.equal(await tlsServer.stop(), 0);
      }
    });
  });

  describe('--help', () => {
    const commands = [
      [],
      ['keys'],
      ['keys', 'create'],
      ['keys', 'list'],
      ['keys', 'show'],
      ['keys', 'scopes'],
      ['keys', 'scopes', 'set'],
      ['keys', 'scopes', 'add'],
      ['keys', 'scopes', 'remove'],
      ['keys', 'whitelist'],
      ['keys', 'whitelist', 'set'],
      ['keys', 'whitelist', 'add'],
      ['keys', 'whitelist', 'remove'],
      ['keys', 'whitelist', 'clear'],
      ['keys', 'update'],
      ['keys', 'rotate'],
      ['keys', 'disable'],
      ['keys', 'enable'],
      ['keys', 'revoke'],
      ['keys', 'events'],
      ['verify'],
    ];

    it('documents every command, with the connection options, and exits 0', async () => {
      for (const command of commands) {
        const run = await runCli([...command, '--help']);
        assert.equal(run.code, 0, `${command.join(' ')} --help: ${run.stderr}`);
        assert.ok(run.stdout.startsWith(`Usage: ${['keyward', ...command].join(' ')} `), run.stdout);
        assert.match(run.stdout, /--addr <host:port>/);
        assert.match(run.stdout, /--json/);
      }
    });
  });
});
