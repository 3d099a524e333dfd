import { type handleUnaryCall, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { KeyAdmin } from '../admin/KeyAdmin';
import type { KeyAdminServiceServer } from '../gen/keyward/v1/keyward';
import { fromProtoEnvironment, toApiKey } from './apiKeyMessage';
import type { AdminActor, AdminAuthenticator } from './auth';
import { toErrorStatus } from './errorStatus';
import { isMalformed } from './malformedRequest';

/** Observes each admin call: method, gRPC status code, seconds taken. */
export type AdminCallObserver = (method: string, code: status, seconds: number) => void;

/**
 * The KeyAdminService handlers: authenticate the call (its actor is the name
 * of the admin token presented), map the message to a KeyAdmin call and the
 * result back. All the rules live in KeyAdmin.
 */
export function createAdminService(
  admin: KeyAdmin,
  authenticate: AdminAuthenticator,
  logger: Logger,
  observe: AdminCallObserver = () => {},
): KeyAdminServiceServer {
  const handle =
    <Req, Res>(method: string, run: (request: Req, actor: AdminActor) => Promise<Res>): handleUnaryCall<Req, Res> =>
    (call, callback) => {
      const started = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
      const actor = authenticate(call.metadata, call.getPeer());
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
      run(call.request, actor).then(
        (response) => {
          observe(method, status.OK, seconds());
          callback(null, response);
        },
        (error: unknown) => {
          // The actor goes on the line an error is logged with (an audit trail is issue 12's next part).
          const errorStatus = toErrorStatus(error, logger.child({ actor: actor.name }), method);
          observe(method, errorStatus.code, seconds());
          callback(errorStatus);
        },
      );
    };

  return {
    createKey: handle('CreateKey', async (request) => {
      const { record, secret } = await admin.create({
        accountId: request.accountId,
        name: request.name,
        environment: fromProtoEnvironment(request.environment),
        scopes: request.scopes,
        ipWhitelist: request.ipWhitelist,
        expiresAt: request.expiresAt,
      });
      return { key: toApiKey(record), secret };
    }),
    getKey: handle('GetKey', async (request) => ({ key: toApiKey(await admin.get(request.accountId, request.keyId)) })),
    listKeys: handle('ListKeys', async (request) => {
      const { records, nextPageToken } = await admin.list(request);
      return { keys: records.map(toApiKey), nextPageToken };
    }),
    updateScopes: handle('UpdateScopes', async (request) => ({
      key: toApiKey(await admin.updateScopes(request.accountId, request.keyId, request.scopes)),
    })),
    updateIpWhitelist: handle('UpdateIpWhitelist', async (request) => ({
      key: toApiKey(await admin.updateIpWhitelist(request.accountId, request.keyId, request.ipWhitelist)),
    })),
    revokeKey: handle('RevokeKey', async (request) => ({ key: toApiKey(await admin.revoke(request.accountId, request.keyId)) })),
    disableKey: handle('DisableKey', async (request) => ({ key: toApiKey(await admin.disable(request.accountId, request.keyId)) })),
    enableKey: handle('EnableKey', async (request) => ({ key: toApiKey(await admin.enable(request.accountId, request.keyId)) })),
  };
}
