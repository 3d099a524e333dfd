import { type handleUnaryCall, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { KeyAdmin } from '../admin/KeyAdmin';
import type { KeyAdminServiceServer } from '../gen/keyward/v1/keyward';
import type { AdminContext } from '../keys/KeyEvent';
import { fromProtoEnvironment, toApiKey } from './apiKeyMessage';
import type { AdminAuthenticator } from './auth';
import { toErrorStatus } from './errorStatus';
import { toKeyEvent } from './keyEventMessage';
import { isMalformed } from './malformedRequest';
import { peerAddress } from './peerAddress';

/** Observes each admin call: method, gRPC status code, seconds taken. */
export type AdminCallObserver = (method: string, code: status, seconds: number) => void;

/**
 * The KeyAdminService handlers: authenticate the call (its actor is the name
 * of the admin token presented), map the message to a KeyAdmin call and the
 * result back. Each call's AdminContext (actor, and the caller's address from
 * the connection's peer) goes with every change, into its audit event. All
 * the rules live in KeyAdmin.
 */
export function createAdminService(
  admin: KeyAdmin,
  authenticate: AdminAuthenticator,
  logger: Logger,
  observe: AdminCallObserver = () => {},
): KeyAdminServiceServer {
  const handle =
    <Req, Res>(method: string, run: (request: Req, context: AdminContext) => Promise<Res>): handleUnaryCall<Req, Res> =>
    (call, callback) => {
      const started = process.hrtime.bigint();
      const receivedAt = performance.timeOrigin + performance.now();
      const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
      const peer = call.getPeer();
      const actor = authenticate(call.metadata, peer);
      if (actor === undefined) {
        observe(method, status.UNAUTHENTICATED, seconds());
        callback({ code: status.UNAUTHENTICATED, details: 'admin RPCs need "authorization: Bearer <admin token>" metadata' });
        return;
      }
      if (isMalformed(call.request)) {
        observe(method, status.INVALID_ARGUMENT, seconds());
        callback({ code: status.INVALID_ARGUMENT, details: call.request.message });
        return;
      }
      run(call.request, { actor: actor.name, clientAddress: peerAddress(peer) }).then(
        (response) => {
          observe(method, status.OK, seconds());
          callback(null, response);
          // A change's milestones at debug level (bench/revokeLatency.ts reads them with change-announced and change-heard).
          if (logger.isLevelEnabled('debug')) {
            const keyId = (call.request as { keyId?: unknown }).keyId;
            logger.debug({ event: 'admin-call', method, keyId, receivedAt, answeredAt: performance.timeOrigin + performance.now() }, 'admin call answered');
          }
        },
        (error: unknown) => {
          // The actor goes on the line an error is logged with; a failed change writes no audit event.
          const errorStatus = toErrorStatus(error, logger.child({ actor: actor.name }), method);
          observe(method, errorStatus.code, seconds());
          callback(errorStatus);
        },
      );
    };

  return {
    createKey: handle('CreateKey', async (request, context) => {
      const { record, secret } = await admin.create(context, {
        accountId: request.accountId,
        name: request.name,
        environment: fromProtoEnvironment(request.environment),
        scopes: request.scopes,
        ipWhitelist: request.ipWhitelist,
        expiresAt: request.expiresAt,
        metadata: request.metadata,
      });
      return { key: toApiKey(record), secret };
    }),
    getKey: handle('GetKey', async (request) => ({ key: toApiKey(await admin.get(request.accountId, request.keyId)) })),
    listKeys: handle('ListKeys', async (request) => {
      const { records, nextPageToken } = await admin.list(request);
      return { keys: records.map(toApiKey), nextPageToken };
    }),
    listKeyEvents: handle('ListKeyEvents', async (request) => {
      const { events, nextPageToken } = await admin.listEvents(request);
      return { events: events.map(toKeyEvent), nextPageToken };
    }),
    updateScopes: handle('UpdateScopes', async (request, context) => ({
      key: toApiKey(await admin.updateScopes(context, request.accountId, request.keyId, request.scopes)),
    })),
    updateIpWhitelist: handle('UpdateIpWhitelist', async (request, context) => ({
      key: toApiKey(await admin.updateIpWhitelist(context, request.accountId, request.keyId, request.ipWhitelist)),
    })),
    updateKey: handle('UpdateKey', async (request, context) => ({ key: toApiKey(await admin.update(context, request)) })),
    revokeKey: handle('RevokeKey', async (request, context) => ({ key: toApiKey(await admin.revoke(context, request.accountId, request.keyId)) })),
    disableKey: handle('DisableKey', async (request, context) => ({ key: toApiKey(await admin.disable(context, request.accountId, request.keyId)) })),
    rotateKey: handle('RotateKey', async (request, context) => {
      const { record, secret } = await admin.rotate(context, request.accountId, request.keyId, request.gracePeriod);
      return { key: toApiKey(record), secret };
    }),
    enableKey: handle('EnableKey', async (request, context) => ({ key: toApiKey(await admin.enable(context, request.accountId, request.keyId)) })),
  };
}
