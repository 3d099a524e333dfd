import { type KeyEvent, KeyAction, keyActionToJSON } from '../gen/keyward/v1/keyward';

/** `create`, `revoke`, …: an action as the command line spells it. */
export function actionName(action: KeyAction): string {
  return action === KeyAction.KEY_ACTION_UNSPECIFIED ? 'unspecified' : keyActionToJSON(action).replace(/^KEY_ACTION_/, '').toLowerCase();
}

/** `scopes: ["jobs:read"] → ["jobs:read","jobs:write"]`; a field set at creation as `name: "CRM"`. */
function changeText(event: KeyEvent): string {
  return event.changes.map((change) => (change.beforeJson === '' ? `${change.field}: ${change.afterJson}` : `${change.field}: ${change.beforeJson} → ${change.afterJson}`)).join('; ');
}

/** A table of events, newest first as given, columns aligned; `withKey` adds the key id column (a whole account's events). */
export function formatEventTable(events: readonly KeyEvent[], withKey: boolean): string {
  if (events.length === 0) return 'no events\n';
  const header = ['TIME', ...(withKey ? ['KEY'] : []), 'ACTION', 'ACTOR', 'ADDRESS', 'CHANGES'];
  const rows = events.map((event) => [
    event.at === undefined ? '-' : event.at.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    ...(withKey ? [event.keyId] : []),
    actionName(event.action),
    event.actor,
    event.clientAddress === '' ? '-' : event.clientAddress,
    changeText(event),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] as string).length)));
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd()).join('\n') + '\n';
}

/**
 * An event as JSON for scripts: proto3 JSON names, the action by its enum
 * name, and each change's values parsed (`before` absent when the field had
 * none, at creation).
 */
export function keyEventJson(event: KeyEvent): Record<string, unknown> {
  return {
    id: event.id,
    keyId: event.keyId,
    action: keyActionToJSON(event.action),
    actor: event.actor,
    clientAddress: event.clientAddress,
    at: event.at?.toISOString() ?? null,
    changes: event.changes.map((change) => ({
      field: change.field,
      ...(change.beforeJson === '' ? {} : { before: JSON.parse(change.beforeJson) as unknown }),
      after: change.afterJson === '' ? null : (JSON.parse(change.afterJson) as unknown),
    })),
  };
}
