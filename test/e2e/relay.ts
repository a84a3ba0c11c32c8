// A TCP port relayed to a unix socket, run in a network namespace (`ip netns exec NS node relay.ts HOST PORT SOCKET`): how the
// lab puts istiod (test/e2e/istiod.ts, listening on a unix socket beside the other stand-ins) at the east-west gateway's
// address on the far side of the VM's NIC, where the sidecar reaches it as it reaches a remote istiod, not on the VM's own
// loopback (which istio-iptables sends the proxy's own traffic to the inbound listener from). Prints "listening" when it
// is; exits when stdin closes.
import { createConnection, createServer } from 'node:net';

const [host, port, socketPath] = process.argv.slice(2);
const server = createServer((client) => {
  const upstream = createConnection(socketPath!);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  for (const side of [client, upstream]) side.on('error', end).on('close', end);
  client.pipe(upstream).pipe(client);
});
server.on('error', (error) => {
  process.stderr.write(`relay ${host}:${port}: ${error.message}\n`);
  process.exit(1);
});
server.listen(Number(port), host, () => process.stdout.write('listening\n'));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
