import { Command, Option } from 'commander';
import { DEFAULT_CLI_ADDRESS, DEFAULT_CLI_DEADLINE_MS } from './connection';
import { registerKeysCommands } from './keysCommands';
import { registerVerifyCommand } from './verifyCommand';

/** The `keyward` command: its options (accepted before or after the subcommand) and subcommands. */
export function createProgram(): Command {
  const program = new Command('keyward')
    .description("keyward's command line: manage API keys and check them, over keyward's gRPC API")
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureHelp({ showGlobalOptions: true })
    .option('--addr <host:port>', `keyward's address (default: KEYWARD_ADDR, else ${DEFAULT_CLI_ADDRESS})`)
    .option('--token-file <file>', 'file holding the token (admin for keys, verifier for verify)')
    .option('--token <token>', 'the token itself (visible to other users in ps; prefer --token-file or the variable)')
    .option('--tls', "use TLS, trusting the system's CAs (implied by --tls-*)")
    .option('--tls-ca <file>', "PEM CA bundle that signed keyward's certificate")
    .option('--tls-cert <file>', 'PEM client certificate, for mutual TLS (with --tls-key)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .addOption(new Option('--deadline-ms <ms>', `deadline of each call (default: ${DEFAULT_CLI_DEADLINE_MS})`))
    .option('--json', 'print JSON (one document on stdout) instead of text, for scripts');
  registerKeysCommands(program);
  registerVerifyCommand(program);
  return program;
}
