/**
 * `node dist/src/healthProbe.js`: the container's health check (Dockerfile
 * HEALTHCHECK). Asks the keyward of this container, at KEYWARD_ADDR (a
 * wildcard host read as loopback, as the CLI reads it), for
 * grpc.health.v1.Health/Check of the whole server, and exits 0 only on
 * SERVING; 1 on anything else: NOT_SERVING (starting or stopping), nothing
 * listening, no answer within the deadline. Plaintext only: with TLS on the
 * port, use a probe that speaks it (README, "Operations → Transport").
 */
import { type Client, credentials, makeGenericClientConstructor, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { resolveAddress } from './cli/connection';

/** Below the HEALTHCHECK --timeout, so that the probe reports why rather than being killed. */
export const PROBE_DEADLINE_MS = 2_000;

const HealthClient = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health');

type CheckMethod = (request: { service: string }, options: { deadline: number }, callback: (error: ServiceError | null, response?: { status: string }) => void) => void;

/**
 * Whether the server at `address` reports itself SERVING, with the status
 * it reported ('SERVING', 'NOT_SERVING', …) or why there was no answer, as
 * text. Never rejects.
 */
export async function checkHealth(address: string, deadlineMs: number = PROBE_DEADLINE_MS): Promise<{ serving: boolean; detail: string }> {
  let client: Client | undefined;
  try {
    client = new HealthClient(address, credentials.createInsecure());
    const check = (client as unknown as { check: CheckMethod }).check.bind(client);
    const status = await new Promise<string>((resolve, reject) =>
      check({ service: '' }, { deadline: Date.now() + deadlineMs }, (error, response) => (error ? reject(error) : resolve(response?.status ?? 'UNKNOWN'))),
    );
    return { serving: status === 'SERVING', detail: status };
  } catch (error) {
    const { code, details } = error as Partial<ServiceError>;
    return { serving: false, detail: code === undefined ? `no answer: ${String(error)}` : `no answer: code ${code} ${details}` };
  } finally {
    client?.close();
  }
}

async function main(): Promise<void> {
  const address = resolveAddress(undefined, process.env);
  const { serving, detail } = await checkHealth(address);
  // Docker keeps the probe's output with each health result (`docker inspect`).
  process.stdout.write(`${address}: ${detail}\n`);
  process.exit(serving ? 0 : 1);
}

if (require.main === module) void main();
