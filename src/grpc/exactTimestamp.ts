import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { Timestamp } from '../gen/google/protobuf/timestamp';

/** google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z. */
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

/**
 * The Timestamp in field `fieldNumber` of an encoded message (the last one,
 * as the generated decoder reads it) as a Date of whole milliseconds, or an
 * invalid Date when it is outside what google.protobuf.Timestamp allows
 * (nanos outside 0 to 999,999,999, or seconds outside years 1 to 9999).
 *
 * ts-proto's own conversion adds nanos to milliseconds in floating point,
 * accepts any nanos, and rounds 9999-12-31T23:59:59.999999999Z up into the
 * year 10000: keyward reads the field again, exactly. Undefined when the
 * field is absent.
 */
export function exactTimestampField(bytes: Uint8Array, fieldNumber: number): Date | undefined {
  const reader = new BinaryReader(bytes);
  let found: Timestamp | undefined;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === fieldNumber && wireType === WireType.LengthDelimited) found = Timestamp.decode(reader, reader.uint32());
    else reader.skip(wireType);
  }
  if (found === undefined) return undefined;
  const seconds = BigInt(found.seconds);
  if (found.nanos < 0 || found.nanos > 999_999_999 || seconds < MIN_SECONDS || seconds > MAX_SECONDS) return new Date(Number.NaN);
  return new Date(Number(seconds) * 1_000 + Math.floor(found.nanos / 1_000_000));
}
