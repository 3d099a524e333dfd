import type { Command } from 'commander';
import type { KeyEvent } from '../gen/keyward/v1/keyward';
import { usageError } from './CliError';
import { accountOption, adminAction, print } from './adminAction';
import { formatEventTable, keyEventJson } from './eventOutput';
import { json } from './output';

/** The largest page ListKeyEvents serves. */
const MAX_PAGE = 1000;

function parseLimit(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9]\d{0,8}$/.test(value)) throw usageError(`--limit ${JSON.stringify(value)}: not a whole number ≥ 1`);
  return Number(value);
}

/** `keyward keys events --account A [KEY_ID]`: the audit trail, newest first. */
export function registerEventsCommand(keys: Command): void {
  keys
    .command('events')
    .description("show the audit trail of an account's keys (or of one key), newest first: every page, or --limit events")
    .argument('[key-id]', 'only the events of this key (a UUID)')
    .addOption(accountOption())
    .option('--limit <n>', 'show at most the n newest events')
    .action(
      adminAction(async (client, options, keyId: string | undefined) => {
        const limit = parseLimit((options as unknown as { limit?: string }).limit);
        const found: KeyEvent[] = [];
        let pageToken = '';
        do {
          const pageSize = limit === undefined ? MAX_PAGE : Math.min(MAX_PAGE, limit - found.length);
          const page = await client.listKeyEvents({ accountId: options.account, keyId: keyId ?? '', pageSize, pageToken });
          found.push(...page.events);
          pageToken = page.nextPageToken;
        } while (pageToken !== '' && (limit === undefined || found.length < limit));
        const events = limit === undefined ? found : found.slice(0, limit);
        print(options.json === true ? json({ events: events.map(keyEventJson) }) : formatEventTable(events, keyId === undefined));
      }),
    );
}
