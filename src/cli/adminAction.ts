import { type Command, Option } from 'commander';
import type { KeywardClient } from '../client/KeywardClient';
import type { ApiKey } from '../gen/keyward/v1/keyward';
import { CliError } from './CliError';
import { type ConnectionOptions, withClient } from './connection';
import { apiKeyJson, formatKey, json } from './output';

/** The options every `keyward` command can read: connection, and --json. */
export type GlobalOptions = ConnectionOptions & { json?: boolean };

/** Writes `text` to stdout. */
export function print(text: string): void {
  process.stdout.write(text);
}

/** Prints one key: its fields for a person, `{"key": …}` with --json. */
export function printKey(key: ApiKey | undefined, options: GlobalOptions): void {
  if (key === undefined) throw new CliError('the server answered without a key');
  print(options.json === true ? json({ key: apiKeyJson(key) }) : formatKey(key));
}

/** Runs an admin action with the command's own and global options, and a client closed afterwards. */
export function adminAction<A extends unknown[]>(
  action: (client: KeywardClient, options: GlobalOptions & { account: string }, ...args: A) => Promise<void>,
): (...commanderArgs: unknown[]) => Promise<void> {
  return async (...commanderArgs: unknown[]) => {
    const command = commanderArgs[commanderArgs.length - 1] as Command;
    const options = command.optsWithGlobals<GlobalOptions & { account: string }>();
    const args = commanderArgs.slice(0, -2) as A;
    await withClient(options, 'admin', (client) => action(client, options, ...args));
  };
}

/** The --account option of every keys command. */
export function accountOption(): Option {
  return new Option('--account <id>', 'the account (tenant) the key belongs to').makeOptionMandatory();
}

