import { CommanderError } from 'commander';
import { EXIT, describeError, exitCodeOf } from './CliError';
import { createProgram } from './createProgram';

/**
 * Runs the command line `argv` (as process.argv) and resolves with the exit
 * code. A failure is printed as one line on stderr, `error: …`, never with a
 * stack trace.
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  try {
    await createProgram().parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (error) {
    // Commander has printed its own message (or the help) already.
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    process.stderr.write(`error: ${describeError(error)}\n`);
    return exitCodeOf(error);
  }
}
