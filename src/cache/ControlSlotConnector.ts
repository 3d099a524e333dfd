import net from 'node:net';
import { AbstractConnector, type Cluster } from 'ioredis';

/** A node's address. */
export interface NodeAddress {
  readonly host: string;
  readonly port: number;
}

/** `host:port` or `[v6]:port` (REDIS_CLUSTER_NODES, ioredis node keys) as an address. */
export function parseNodeAddress(text: string): NodeAddress {
  const colon = text.lastIndexOf(':');
  const host = text.slice(0, colon);
  return { host: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host, port: Number(text.slice(colon + 1)) };
}

/**
 * The master that serves `slot` now, as the cluster says: CLUSTER SLOTS asked
 * of any node through `cluster` (bounded by its command timeout), else the
 * cluster client's own slot table, else undefined.
 */
export async function ownerOfSlot(cluster: Cluster, slot: number, readyWithinMs: number): Promise<NodeAddress | undefined> {
  try {
    await clusterReady(cluster, readyWithinMs);
    const ranges = (await cluster.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>;
    for (const [start, end, [host, port]] of ranges) {
      if (start <= slot && slot <= end && host !== '') return { host, port: Number(port) };
    }
  } catch {
    // The cluster client is not ready, or that node did not answer: its table is the next best guess.
  }
  const known = cluster.slots[slot]?.[0];
  return known === undefined ? undefined : parseNodeAddress(known);
}

/** Resolves once `cluster` is ready, or after `ms` (at a start, the subscriber asks before the cluster client has its layout). */
function clusterReady(cluster: Cluster, ms: number): Promise<void> {
  if (cluster.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      cluster.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    cluster.once('ready', done);
  });
}

/**
 * Connects a plain ioredis client to the master serving one slot (keyward's
 * control slot), finding that master anew at every (re)connection: the
 * subscriber connection follows a failover or a slot migration by
 * reconnecting (InvalidationBus reconnects when Redis unsubscribes it from a
 * slot it lost, or answers MOVED to SSUBSCRIBE). It never fails to connect
 * for want of an answer (a rejection would end the ioredis client for good):
 * without one it tries the seed nodes in turn, and a wrong node answers
 * SSUBSCRIBE with MOVED (or is a replica), which reconnects.
 */
export function controlSlotConnector(cluster: Cluster, slot: number, seeds: readonly NodeAddress[], readyWithinMs: number): new (options: unknown) => AbstractConnector {
  let nextSeed = 0;
  return class ControlSlotConnector extends AbstractConnector {
    constructor(options: unknown) {
      super((options as { disconnectTimeout?: number }).disconnectTimeout ?? 2_000);
    }

    async connect(): Promise<net.Socket> {
      this.connecting = true;
      let address = await ownerOfSlot(cluster, slot, readyWithinMs);
      if (address === undefined) {
        address = seeds[nextSeed % seeds.length] as NodeAddress;
        nextSeed++;
      }
      if (!this.connecting) {
        // Disconnected while looking (a reconnection asked for, or a close).
        // Rejecting would end the client for good; a stream already closed
        // lets ioredis decide as for a connection that failed: reconnect,
        // unless it is closing.
        const closed = new net.Socket();
        closed.destroy();
        this.stream = closed;
        return closed;
      }
      const stream = net.createConnection({ host: address.host, port: address.port });
      stream.once('error', (error) => {
        this.firstError = error;
      });
      this.stream = stream;
      return stream;
    }
  };
}
