import { type ApiKey, Environment as ProtoEnvironment } from '../gen/keyward/v1/keyward';
import type { Environment } from '../keys/KeyFormat';
import type { KeyRecord } from '../keys/KeyRecord';

export function toProtoEnvironment(environment: Environment): ProtoEnvironment {
  return environment === 'live' ? ProtoEnvironment.ENVIRONMENT_LIVE : ProtoEnvironment.ENVIRONMENT_TEST;
}

export function fromProtoEnvironment(environment: ProtoEnvironment): Environment | undefined {
  if (environment === ProtoEnvironment.ENVIRONMENT_LIVE) return 'live';
  if (environment === ProtoEnvironment.ENVIRONMENT_TEST) return 'test';
  return undefined;
}

/** A stored key as the ApiKey message. Never carries the secret: the record has none. */
export function toApiKey(record: KeyRecord): ApiKey {
  return {
    id: record.id,
    accountId: record.accountId,
    name: record.name,
    environment: toProtoEnvironment(record.environment),
    display: record.display,
    scopes: [...record.scopes],
    ipWhitelist: [...record.ipWhitelist],
    createdAt: record.createdAt,
    revokedAt: record.revokedAt ?? undefined,
    disabledAt: record.disabledAt ?? undefined,
    expiresAt: record.expiresAt ?? undefined,
    lastUsedAt: record.usage.lastUsedAt ?? undefined,
    requestCount: record.usage.requestCount,
    lastUsedIp: record.usage.lastUsedIp ?? '',
    refusedCount: record.usage.refusedCount,
    metadata: { ...record.metadata },
    rotatedFromKeyId: record.rotatedFromKeyId ?? '',
    replacedByKeyId: record.replacedByKeyId ?? '',
  };
}
