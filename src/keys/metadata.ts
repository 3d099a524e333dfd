import { KeywardError, quote } from '../errors';
import { LIMITS } from './fields';

/** A key's metadata: free-form string labels, at most LIMITS.metadata*. */
export type KeyMetadata = Readonly<Record<string, string>>;

const METADATA_KEY = /^[a-z][a-z0-9_.-]{0,39}$/;
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;

const refuse = (field: string, problem: string): KeywardError => new KeywardError('INVALID_ARGUMENT', `${field}: ${problem}`);

/**
 * Checks metadata against the documented limits and returns it as a plain
 * object with its keys sorted (so equal metadata is stored and encoded
 * alike). Entries are checked in key order, so the entry an error names does
 * not depend on the order the caller's map was encoded in. `field` is the
 * request field ('metadata').
 */
export function checkMetadata(field: string, input: Readonly<Record<string, string>>): KeyMetadata {
  const keys = Object.keys(input);
  if (keys.length > LIMITS.metadataEntries) {
    throw refuse(`${field} ${quote(`${keys.length} entries`)}`, `must have at most ${LIMITS.metadataEntries} entries`);
  }
  keys.sort();
  const metadata: Record<string, string> = {};
  let bytes = 0;
  for (const key of keys) {
    const value = input[key] ?? '';
    const entry = `${field}[${quote(key)}]`;
    if (!METADATA_KEY.test(key)) {
      throw refuse(entry, 'the key must be a lower-case letter, then up to 39 lower-case letters, digits, "_", "." or "-"');
    }
    if (value.length > LIMITS.metadataValueLength) {
      throw refuse(`${entry} ${quote(`${value.length} characters`)}`, `the value must be at most ${LIMITS.metadataValueLength} characters`);
    }
    if (CONTROL_CHARACTERS.test(value)) throw refuse(`${entry} ${quote(value)}`, 'the value must not hold control characters');
    bytes += Buffer.byteLength(key) + Buffer.byteLength(value);
    if (bytes > LIMITS.metadataBytes) {
      throw refuse(`${entry} ${quote(value)}`, `the metadata must be at most ${LIMITS.metadataBytes} bytes in all (keys and values, UTF-8); this entry passes it`);
    }
    metadata[key] = value;
  }
  return metadata;
}
