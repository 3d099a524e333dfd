/**
 * The floor of the benchmark: a gRPC server on the same stack as keyward
 * (@grpc/grpc-js, the generated KeyVerifierService definition, the same
 * server options) whose handlers do nothing but answer a fixed response,
 * given by the benchmark as the protobuf bytes of a real keyward answer, so
 * that both servers serialize the same message. No key check can beat it.
 *
 *   FLOOR_RESPONSE=<base64 VerifyResponse> FLOOR_ADDR=127.0.0.1:0 node dist/bench/floorServer.js
 *
 * Prints {"port":…,"statsPort":…} once listening; GET /stats on statsPort
 * answers {"calls":…,"cpuUs":…,"rssBytes":…} (process.cpuUsage, as keyward's
 * metrics do).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { KeyVerifierServiceService, type KeyVerifierServiceServer, VerifyResponse, type VerifyStreamRequest } from '../src/gen/keyward/v1/keyward';
import { MAX_RECEIVE_BYTES, MAX_SEND_BYTES } from '../src/grpc/server';

const response = VerifyResponse.decode(Buffer.from(process.env.FLOOR_RESPONSE ?? '', 'base64'));
let calls = 0;

const floor: KeyVerifierServiceServer = {
  verify(_call, callback) {
    calls++;
    callback(null, response);
  },
  verifyStream(call) {
    call.on('data', (request: VerifyStreamRequest) => {
      calls++;
      call.write({ requestId: request.requestId, outcome: { $case: 'result', value: response } });
    });
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
};

const server = new Server({ 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES, 'grpc.max_send_message_length': MAX_SEND_BYTES });
server.addService(KeyVerifierServiceService, floor);
const stats = createServer((_request, reply) => {
  const cpu = process.cpuUsage();
  reply.end(JSON.stringify({ calls, cpuUs: cpu.user + cpu.system, rssBytes: process.memoryUsage().rss }));
});
stats.listen(0, '127.0.0.1', () => {
  server.bindAsync(process.env.FLOOR_ADDR ?? '127.0.0.1:0', ServerCredentials.createInsecure(), (error, port) => {
    if (error) throw error;
    console.log(JSON.stringify({ port, statsPort: (stats.address() as AddressInfo).port }));
  });
});
process.on('SIGTERM', () => {
  server.forceShutdown();
  stats.close();
});
