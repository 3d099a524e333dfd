import type { ServiceDefinition } from '@grpc/grpc-js';

/**
 * What a request that is not a valid protobuf message decodes to. grpc-js
 * answers a deserializer's throw with INTERNAL; keyward answers
 * INVALID_ARGUMENT instead (the caller's bytes are wrong, not the server),
 * so the handlers look for this and refuse it.
 */
export class MalformedRequest {
  constructor(readonly method: string) {}

  get message(): string {
    return `request: not a valid protobuf message for ${this.method}`;
  }
}

/** Whether a handler's request is a MalformedRequest (typed as the request it should have been). */
export function isMalformed(request: unknown): request is MalformedRequest {
  return request instanceof MalformedRequest;
}

/**
 * The service definition with every request deserializer made tolerant: a
 * message that does not decode becomes a MalformedRequest for the handler.
 */
export function withTolerantDecoding<T extends ServiceDefinition>(definition: T): T {
  const tolerant: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(definition)) {
    const decode = method.requestDeserialize;
    tolerant[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes);
        } catch {
          return new MalformedRequest(method.path);
        }
      },
    };
  }
  return tolerant as T;
}
