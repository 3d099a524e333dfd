import { type ServiceError, status } from '@grpc/grpc-js';

/** Exit codes of the `keyward` command. */
export const EXIT = {
  ok: 0,
  /** The call failed: a gRPC error, or a change the command could not make. */
  failed: 1,
  /** The command line was wrong (commander's own errors too), or an action was refused (revoke without --yes). */
  usage: 2,
  /** `keyward verify`: the key would be refused. */
  refused: 3,
} as const;

/** An error the CLI reports as one line and exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** A mistake on the command line or in the environment: exit 2. */
export function usageError(message: string): CliError {
  return new CliError(message, EXIT.usage);
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === 'number' && typeof (error as Partial<ServiceError>).details === 'string';
}

/** Hints for the failures a person at a terminal can fix. */
const HINTS: Partial<Record<status, string>> = {
  [status.UNAUTHENTICATED]: ' (check --token, --token-file or the token variable)',
  [status.UNAVAILABLE]: ' (check --addr or KEYWARD_ADDR, and --tls-* against the server)',
};

/**
 * The one line the CLI prints for a failure, without a stack trace:
 * `INVALID_ARGUMENT: scopes[0] "x": unknown scope; …` for a gRPC error, the
 * message otherwise.
 */
export function describeError(error: unknown): string {
  let text: string;
  if (isServiceError(error)) {
    // grpc-js ends a connection failure with "Resolution note: " and nothing after it.
    const details = error.details.replace(/\s*Resolution note:\s*$/, '');
    text = `${status[error.code] ?? `status ${error.code}`}: ${details}${HINTS[error.code as status] ?? ''}`;
  } else if (error instanceof Error) text = error.message;
  else text = String(error);
  return text.replace(/\s*[\r\n]+\s*/g, ' ');
}

/** The exit code of a failure. */
export function exitCodeOf(error: unknown): number {
  return error instanceof CliError ? error.exitCode : EXIT.failed;
}
