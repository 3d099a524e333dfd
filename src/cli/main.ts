#!/usr/bin/env node
/** The `keyward` command (package.json `bin`). */
import { runCli } from './runCli';

// Deprecation warnings are for the authors of the code that triggers them, not for the person running the
// command: grpc-js, for one, sets the TLS server name to an IP address when --addr is one (DEP0123).
process.noDeprecation = true;
// `keyward keys list | head -1`: a reader that stopped reading is not a failure worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

void runCli(process.argv).then((code) => {
  process.exitCode = code;
});
