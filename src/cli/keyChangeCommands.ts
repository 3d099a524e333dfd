import type { Command } from 'commander';
import type { KeywardClient } from '../client/KeywardClient';
import type { ApiKey } from '../gen/keyward/v1/keyward';
import { CliError } from './CliError';
import { splitList } from './arguments';
import { type GlobalOptions, accountOption, adminAction, printKey } from './adminAction';

const NOT_ATOMIC = 'reads the key, then replaces the list (a change made in between by someone else is overwritten)';

async function currentKey(client: KeywardClient, accountId: string, keyId: string): Promise<ApiKey> {
  const { key } = await client.getKey({ accountId, keyId });
  if (key === undefined) throw new CliError('the server answered without a key');
  return key;
}

/** `keyward keys scopes …` and `keyward keys whitelist …`. */
export function registerKeyChangeCommands(keys: Command): void {
  const scopes = keys.command('scopes').description("change a key's scopes");

  const setScopes = async (client: KeywardClient, options: GlobalOptions & { account: string }, keyId: string, wanted: string[]): Promise<void> => {
    printKey((await client.updateScopes({ accountId: options.account, keyId, scopes: wanted })).key, options);
  };

  scopes
    .command('set')
    .description('replace the scopes')
    .argument('<key-id>', 'the key id (a UUID)')
    .argument('<scopes...>', 'one or more scopes (or comma-separated)')
    .addOption(accountOption())
    .action(adminAction(async (client, options, keyId: string, given: string[]) => setScopes(client, options, keyId, splitList(given))));

  scopes
    .command('add')
    .description(`grant scopes; ${NOT_ATOMIC}`)
    .argument('<key-id>', 'the key id (a UUID)')
    .argument('<scopes...>', 'one or more scopes (or comma-separated)')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string, given: string[]) => {
        const key = await currentKey(client, options.account, keyId);
        await setScopes(client, options, keyId, [...key.scopes, ...splitList(given).filter((scope) => !key.scopes.includes(scope))]);
      }),
    );

  scopes
    .command('remove')
    .description(`withdraw scopes (a key keeps at least one); ${NOT_ATOMIC}`)
    .argument('<key-id>', 'the key id (a UUID)')
    .argument('<scopes...>', 'one or more scopes (or comma-separated)')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string, given: string[]) => {
        const key = await currentKey(client, options.account, keyId);
        const removed = splitList(given);
        const absent = removed.filter((scope) => !key.scopes.includes(scope));
        if (absent.length > 0) throw new CliError(`key ${keyId} does not have ${absent.join(', ')} (it has ${key.scopes.join(', ')})`);
        await setScopes(client, options, keyId, key.scopes.filter((scope) => !removed.includes(scope)));
      }),
    );

  const whitelist = keys.command('whitelist').description("change a key's IP whitelist (empty: any address)");

  const setWhitelist = async (client: KeywardClient, options: GlobalOptions & { account: string }, keyId: string, entries: string[]): Promise<void> => {
    printKey((await client.updateIpWhitelist({ accountId: options.account, keyId, ipWhitelist: entries })).key, options);
  };

  whitelist
    .command('set')
    .description('replace the whitelist')
    .argument('<key-id>', 'the key id (a UUID)')
    .argument('<entries...>', 'addresses or CIDR ranges, e.g. 203.0.113.0/24 2001:db8::1')
    .addOption(accountOption())
    .action(adminAction(async (client, options, keyId: string, given: string[]) => setWhitelist(client, options, keyId, splitList(given))));

  whitelist
    .command('add')
    .description(`add addresses or ranges; ${NOT_ATOMIC}`)
    .argument('<key-id>', 'the key id (a UUID)')
    .argument('<entries...>', 'addresses or CIDR ranges')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string, given: string[]) => {
        const key = await currentKey(client, options.account, keyId);
        await setWhitelist(client, options, keyId, [...key.ipWhitelist, ...splitList(given)]);
      }),
    );

  whitelist
    .command('remove')
    .description(`remove entries, written as stored (see keys show); ${NOT_ATOMIC}`)
    .argument('<key-id>', 'the key id (a UUID)')
    .argument('<entries...>', 'entries as the key lists them')
    .addOption(accountOption())
    .action(
      adminAction(async (client, options, keyId: string, given: string[]) => {
        const key = await currentKey(client, options.account, keyId);
        const removed = splitList(given);
        const absent = removed.filter((entry) => !key.ipWhitelist.includes(entry));
        if (absent.length > 0) {
          const has = key.ipWhitelist.length === 0 ? 'it is empty' : `it has ${key.ipWhitelist.join(', ')}`;
          throw new CliError(`the whitelist of key ${keyId} has no entry ${absent.join(', ')} (${has})`);
        }
        await setWhitelist(client, options, keyId, key.ipWhitelist.filter((entry) => !removed.includes(entry)));
      }),
    );

  whitelist
    .command('clear')
    .description('empty the whitelist: the key may be used from any address')
    .argument('<key-id>', 'the key id (a UUID)')
    .addOption(accountOption())
    .action(adminAction(async (client, options, keyId: string) => setWhitelist(client, options, keyId, [])));
}
