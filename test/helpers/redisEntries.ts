/**
 * Reading keyward's sealed Redis entries from a test (field `d` is
 * `<schema>.<version>.<expiresAt>.<mac>.<payload>`, see src/cache/EntrySeal.ts).
 * Nothing here checks a MAC: tests look at what keyward wrote, or forge entries.
 */
export interface SealedParts {
  readonly schema: string;
  readonly version: string;
  readonly expiresAt: string;
  readonly mac: string;
  /** The record as JSON, "-" for "no such key", "" for a tombstone. */
  readonly payload: string;
}

export function sealedParts(data: string): SealedParts {
  const [schema, version, expiresAt, mac] = data.split('.', 4) as [string, string, string, string];
  const payload = data.slice(schema.length + version.length + expiresAt.length + mac.length + 4);
  return { schema, version, expiresAt, mac, payload };
}

/** The payload of field `d` as keyward wrote it. */
export function entryPayload(data: string): string {
  return sealedParts(data).payload;
}

/** Field `d` from parts (for forged entries). */
export function joinSealed(parts: SealedParts): string {
  return `${parts.schema}.${parts.version}.${parts.expiresAt}.${parts.mac}.${parts.payload}`;
}
