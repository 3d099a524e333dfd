import path from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import type { KeyAdminServiceServer, KeyVerifierServiceServer } from '../gen/keyward/v1/keyward';
import { packageRoot } from '../packageRoot';
import { AdminServiceDefinition, VerifierServiceDefinition } from './serializers';

export const SERVICE_NAMES = ['keyward.v1.KeyAdminService', 'keyward.v1.KeyVerifierService'] as const;

/**
 * Largest request accepted (a larger one is refused with RESOURCE_EXHAUSTED
 * before it is decoded); admin requests with a full whitelist stay far below.
 */
export const MAX_RECEIVE_BYTES = 1 << 20;
/**
 * Largest response sent: the default receive limit of gRPC clients (4 MiB).
 * ListKeys cuts its pages well below it (src/admin/KeyAdmin.ts), so no
 * answer of keyward's ever reaches it.
 */
export const MAX_SEND_BYTES = 4 << 20;

/**
 * The gRPC server of an instance: both keyward services, grpc.health.v1 and
 * server reflection. Starts NOT_SERVING; the app flips health when ready.
 */
export function createGrpcServer(admin: KeyAdminServiceServer, verifier: KeyVerifierServiceServer): { server: Server; health: HealthImplementation } {
  const server = new Server({ 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES, 'grpc.max_send_message_length': MAX_SEND_BYTES });
  server.addService(AdminServiceDefinition, admin);
  server.addService(VerifierServiceDefinition, verifier);
  const health = new HealthImplementation(Object.fromEntries(['', ...SERVICE_NAMES].map((name) => [name, 'NOT_SERVING'])));
  health.addToServer(server);
  // Reflection reads the .proto files (the API itself runs on generated code only).
  const definitions = loadSync(['keyward/v1/keyward.proto', path.basename(healthProtoPath)], {
    includeDirs: [path.join(packageRoot(), 'proto'), path.dirname(healthProtoPath)],
  });
  new ReflectionService(definitions).addToServer(server);
  return { server, health };
}

/**
 * Binds the address (port 0 picks a free one) and resolves with the bound
 * port; plaintext unless `credentials` say otherwise (see grpc/tls.ts).
 */
export function bindServer(server: Server, addr: string, credentials: ServerCredentials = ServerCredentials.createInsecure()): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(addr, credentials, (error, port) => (error ? reject(error) : resolve(port)));
  });
}

/**
 * Stops accepting calls and lets those in flight finish; after `timeoutMs`
 * the rest are cancelled. Resolves when the server is down.
 */
export function shutdownServer(server: Server, timeoutMs: number): Promise<'graceful' | 'forced'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve('forced');
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve('graceful');
    });
  });
}
