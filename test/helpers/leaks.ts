import assert from 'node:assert/strict';

/** Resource kinds that a test file must have closed by its end. */
const LEAKABLE = new Set(['TCPWRAP', 'TCPSocketWrap', 'TCPServerWrap', 'ProcessWrap', 'Timeout', 'UDPWRAP']);

/**
 * Fails when a server, client, pool, child process or timer is still open:
 * waits up to `graceMs` for closing sockets to go, then lists what is left.
 */
export async function assertNoLeaks(graceMs = 3_000): Promise<void> {
  const deadline = Date.now() + graceMs;
  let open: string[] = [];
  for (;;) {
    open = process.getActiveResourcesInfo().filter((kind) => LEAKABLE.has(kind));
    if (open.length === 0 || Date.now() > deadline) break;
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.deepEqual(open, [], `resources still open at the end of the file: ${open.join(', ')}`);
}
