import { type Command, Option } from 'commander';
import type { ApiKey } from '../gen/keyward/v1/keyward';
import { CliError, EXIT, usageError } from './CliError';
import { accountOption, adminAction, print, printKey } from './adminAction';
import { parseEnvironment, parseExpiry, parseGrace, parseMetadata, splitList } from './arguments';
import { confirm } from './confirm';
import { registerEventsCommand } from './eventsCommand';
import { registerKeyChangeCommands } from './keyChangeCommands';
import { apiKeyJson, formatKey, formatKeyTable, json } from './output';

/** `keyward keys …`: create, list, show, update, rotate, scopes, whitelist, disable, enable, revoke, events. */
export function registerKeysCommands(program: Command): void {
  const keys = program
    .command('keys')
    .description('create, list, show, change and revoke API keys (admin token: --token-file, KEYWARD_ADMIN_TOKEN or --token)');

  keys
    .command('create')
    .description('create a key and print its secret on stdout, this one time')
    .addOption(accountOption())
    .requiredOption('--name <name>', 'what the key is for, e.g. "CRM integration"')
    .addOption(new Option('--env <environment>', 'live (fsm_live_…) or test (fsm_test_…)').choices(['live', 'test']).makeOptionMandatory())
    .requiredOption('--scope <scope...>', 'scopes to grant (several, repeated or comma-separated), e.g. jobs:read')
    .option('--ip <cidr...>', 'addresses or CIDR ranges the key may be used from (default: any)')
    .option('--expires <date>', 'expiry: 2027-01-31, 2027-01-31T18:00:00Z, or from now: 90d, 12h (default: never)')
    .option('--meta <key=value...>', 'metadata entries, e.g. integration=crm (repeated or several)')
    .action(
      adminAction(async (client, options) => {
        const { env, scope, ip, expires, name, meta } = options as unknown as {
          env: string;
          scope: string[];
          ip?: string[];
          expires?: string;
          name: string;
          meta?: string[];
        };
        const response = await client.createKey({
          accountId: options.account,
          name,
          environment: parseEnvironment(env),
          scopes: splitList(scope),
          ipWhitelist: splitList(ip),
          expiresAt: expires === undefined ? undefined : parseExpiry(expires),
          metadata: parseMetadata(meta),
        });
        if (response.key === undefined) throw new CliError('the server answered without a key');
        if (options.json === true) {
          print(json({ key: apiKeyJson(response.key), secret: response.secret }));
        } else {
          process.stderr.write(formatKey(response.key));
          print(`${response.secret}\n`);
        }
        process.stderr.write(`keyward: this is the only time the secret of key ${response.key.id} is shown; store it now, it will not be shown again.\n`);
      }),
    );

  keys
    .command('list')
    .description("list an account's keys, newest first (every page)")
    .addOption(accountOption())
    .option('--include-revoked', 'list revoked keys too')
    .action(
      adminAction(async (client, options) => {
        const includeRevoked = (options as unknown as { includeRevoked?: boolean }).includeRevoked === true;
        const found: ApiKey[] = [];
        let pageToken = '';
        do {
          const page = await client.listKeys({ accountId: options.account, includeRevoked, pageSize: 1000, pageToken });
          found.push(...page.keys);
          pageToken = page.nextPageToken;
        } while (pageToken !== '');
        print(options.json === true ? json({ keys: found.map(apiKeyJson) }) : formatKeyTable(found));
      }),
    );

  keys
    .command('show')
    .description('show one key (never its secret)')
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string) => {
        printKey((await client.getKey({ accountId: options.account, keyId })).key, options);
      }),
    );

  keys
    .command('update')
    .description("change a key's name, expiry or metadata (only what the flags name; --meta replaces all the metadata)")
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .option('--name <name>', 'the new name')
    .addOption(new Option('--expires <date>', 'new expiry: 2027-01-31, 2027-01-31T18:00:00Z, or from now: 90d, 12h').conflicts('expiry'))
    .option('--no-expiry', 'the key no longer expires')
    .addOption(new Option('--meta <key=value...>', 'the new metadata, replacing all of it').conflicts('clearMeta'))
    .option('--clear-meta', 'remove all metadata')
    .action(
      adminAction(async (client, options, keyId: string) => {
        const given = options as unknown as { name?: string; expires?: string; expiry?: boolean; meta?: string[]; clearMeta?: boolean };
        const updateMask: string[] = [];
        if (given.name !== undefined) updateMask.push('name');
        if (given.expires !== undefined || given.expiry === false) updateMask.push('expires_at');
        if (given.meta !== undefined || given.clearMeta === true) updateMask.push('metadata');
        if (updateMask.length === 0) throw usageError('nothing to change: give --name, --expires, --no-expiry, --meta or --clear-meta');
        const response = await client.updateKey({
          accountId: options.account,
          keyId,
          name: given.name ?? '',
          expiresAt: given.expires === undefined ? undefined : parseExpiry(given.expires),
          metadata: parseMetadata(given.meta),
          updateMask,
        });
        printKey(response.key, options);
      }),
    );

  keys
    .command('rotate')
    .description('replace a key by a new one (same name, environment, scopes, whitelist, metadata) and print its secret on stdout, this one time')
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .option('--grace <duration>', 'how long the old key keeps working: 0, 90s, 30m, 24h, 7d (at most 30d)', '0')
    .action(
      adminAction(async (client, options, keyId: string) => {
        const grace = (options as unknown as { grace: string }).grace;
        const gracePeriod = parseGrace(grace);
        const response = await client.rotateKey({ accountId: options.account, keyId, gracePeriod });
        if (response.key === undefined) throw new CliError('the server answered without a key');
        if (options.json === true) {
          print(json({ key: apiKeyJson(response.key), secret: response.secret }));
        } else {
          process.stderr.write(formatKey(response.key));
          print(`${response.secret}\n`);
        }
        const old = gracePeriod.seconds === 0n && gracePeriod.nanos === 0 ? `key ${keyId} is revoked` : `key ${keyId} keeps working for ${grace}`;
        process.stderr.write(
          `keyward: this is the only time the secret of key ${response.key.id} is shown; store it now, it will not be shown again. ${old}.\n`,
        );
      }),
    );

  registerKeyChangeCommands(keys);

  keys
    .command('disable')
    .description('disable a key until `keys enable`: Verify refuses it (VERIFY_CODE_DISABLED)')
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string) => {
        printKey((await client.disableKey({ accountId: options.account, keyId })).key, options);
      }),
    );

  keys
    .command('enable')
    .description('enable a disabled key again (a revoked key cannot be)')
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string) => {
        printKey((await client.enableKey({ accountId: options.account, keyId })).key, options);
      }),
    );

  keys
    .command('revoke')
    .description('revoke a key for good (asks first on a terminal; scripts pass --yes)')
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .option('-y, --yes', 'revoke without asking')
    .action(
      adminAction(async (client, options, keyId: string) => {
        if ((options as unknown as { yes?: boolean }).yes !== true) {
          if (process.stdin.isTTY !== true) {
            throw usageError(`refusing to revoke ${keyId} without --yes: stdin is not a terminal to confirm on`);
          }
          const { key } = await client.getKey({ accountId: options.account, keyId });
          const what = key === undefined ? keyId : `${key.id} "${key.name}" (${key.display}) of account ${key.accountId}`;
          if (!(await confirm(`Revoke ${what}? This cannot be undone.`))) throw new CliError('not revoked', EXIT.failed);
        }
        printKey((await client.revokeKey({ accountId: options.account, keyId })).key, options);
      }),
    );

  registerEventsCommand(keys);
}
