import { createInterface } from 'node:readline';

/**
 * Asks a yes/no question on the terminal (on stderr, so that stdout stays
 * the command's output). Only `y` or `yes` is yes; end of input is no.
 */
export function confirm(question: string): Promise<boolean> {
  const terminal = createInterface({ input: process.stdin, output: process.stderr });
  return new Promise<boolean>((resolve) => {
    let answered = false;
    terminal.once('close', () => {
      if (!answered) process.stderr.write('\n');
      resolve(false);
    });
    terminal.question(`${question} [y/N] `, (answer) => {
      answered = true;
      resolve(/^(y|yes)$/i.test(answer.trim()));
      terminal.close();
    });
  });
}
