import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { KeyVerifierServiceServer } from '../gen/keyward/v1/keyward';
import type { Verifier } from '../verify/Verifier';
import type { TokenCheck } from './auth';
import { toErrorStatus } from './errorStatus';

/**
 * The KeyVerifierService handlers. An in-process hit is answered within the
 * call, without an await; only a cache miss goes through a promise.
 */
export function createVerifierService(verifier: Verifier, checkToken: TokenCheck | undefined, logger: Logger): KeyVerifierServiceServer {
  return {
    verify(call, callback) {
      if (checkToken !== undefined && !checkToken(call.metadata)) {
        callback({ code: status.UNAUTHENTICATED, details: 'Verify needs "authorization: Bearer <verifier token>" metadata' });
        return;
      }
      let answer;
      try {
        answer = verifier.verify(call.request);
      } catch (error) {
        callback(toErrorStatus(error, logger, 'Verify'));
        return;
      }
      if (answer instanceof Promise) {
        answer.then(
          (response) => callback(null, response),
          (error: unknown) => callback(toErrorStatus(error, logger, 'Verify')),
        );
      } else {
        callback(null, answer);
      }
    },
  };
}
