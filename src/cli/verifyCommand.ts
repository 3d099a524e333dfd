import type { Command } from 'commander';
import { EXIT } from './CliError';
import type { GlobalOptions } from './adminAction';
import { splitList } from './arguments';
import { withClient } from './connection';
import { formatVerdict, json, verifyJson } from './output';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

/** `keyward verify`: what Verify answers for a key, as the REST API would apply it. */
export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description(
      'ask Verify about a key: prints the verdict, the HTTP status the REST API would send and why; ' +
        `exits ${EXIT.ok} when the key may proceed, ${EXIT.refused} when it is refused (verifier token, when the server has one: --token-file, KEYWARD_VERIFIER_TOKEN or --token)`,
    )
    .requiredOption('--key <key>', 'the key, as sent in X-API-Key; - reads it from stdin (keeps it out of the shell history)')
    .option('--ip <address>', "the REST caller's address, checked against the key's whitelist")
    .option('--scope <scope...>', 'scopes the endpoint needs (several, repeated or comma-separated)')
    .action(async (_options: unknown, command: Command) => {
      const options = command.optsWithGlobals<GlobalOptions & { key: string; ip?: string; scope?: string[] }>();
      const key = options.key === '-' ? await readStdin() : options.key;
      const response = await withClient(options, 'verifier', (client) =>
        client.verify({ key, clientIp: options.ip ?? '', requiredScopes: splitList(options.scope) }),
      );
      process.stdout.write(options.json === true ? json(verifyJson(response)) : formatVerdict(response));
      process.exitCode = response.valid ? EXIT.ok : EXIT.refused;
    });
}
