import { KeyAction as ProtoKeyAction, type KeyEvent } from '../gen/keyward/v1/keyward';
import type { KeyAction, KeyEventRecord } from '../keys/KeyEvent';

const ACTIONS: Record<KeyAction, ProtoKeyAction> = {
  create: ProtoKeyAction.KEY_ACTION_CREATE,
  revoke: ProtoKeyAction.KEY_ACTION_REVOKE,
  disable: ProtoKeyAction.KEY_ACTION_DISABLE,
  enable: ProtoKeyAction.KEY_ACTION_ENABLE,
  scopes: ProtoKeyAction.KEY_ACTION_SCOPES,
  whitelist: ProtoKeyAction.KEY_ACTION_WHITELIST,
  rotate: ProtoKeyAction.KEY_ACTION_ROTATE,
  update: ProtoKeyAction.KEY_ACTION_UPDATE,
};

/** A value as FieldChange's JSON text; '' for none (a before-value at creation). */
const jsonText = (value: unknown): string => (value === undefined ? '' : JSON.stringify(value));

/** A stored audit event as the KeyEvent message. */
export function toKeyEvent(event: KeyEventRecord): KeyEvent {
  return {
    id: event.id,
    keyId: event.keyId,
    action: ACTIONS[event.action] ?? ProtoKeyAction.KEY_ACTION_UNSPECIFIED,
    actor: event.actor,
    clientAddress: event.clientAddress ?? '',
    at: event.at,
    changes: event.changes.map((change) => ({ field: change.field, beforeJson: jsonText(change.before), afterJson: jsonText(change.after) })),
  };
}
