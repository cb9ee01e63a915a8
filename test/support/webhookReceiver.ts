/**
 * A loopback receiver of outbound Standard Webhooks deliveries that verifies each one with the `standardwebhooks`
 * package (what an integration would use) and answers as told: fail the next N attempts, or never accept.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface ReceivedDelivery {
  id: string;
  timestamp: string;
  verified: boolean;
  payload: any;
  accepted: boolean;
}

export interface WebhookReceiver {
  url: string;
  deliveries: ReceivedDelivery[];
  /** Answer 500 to the next `count` deliveries. */
  failNext(count: number): void;
  /** Answer 503 to every delivery until told otherwise. */
  refuseAll(refuse: boolean): void;
  close(): Promise<void>;
}

export async function startWebhookReceiver(secret: string): Promise<WebhookReceiver> {
  const verifier = new Webhook(secret);
  const deliveries: ReceivedDelivery[] = [];
  let failures = 0;
  let refusing = false;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = {
        'webhook-id': String(req.headers['webhook-id'] ?? ''),
        'webhook-timestamp': String(req.headers['webhook-timestamp'] ?? ''),
        'webhook-signature': String(req.headers['webhook-signature'] ?? ''),
      };
      let verified = false;
      let payload: unknown;
      try {
        payload = verifier.verify(body, headers);
        verified = true;
      } catch {
        payload = undefined;
      }
      const accepted = verified && !refusing && failures === 0;
      if (verified && !refusing && failures > 0) failures -= 1;
      deliveries.push({
        id: headers['webhook-id'],
        timestamp: headers['webhook-timestamp'],
        verified,
        payload,
        accepted,
      });
      res.writeHead(!verified ? 401 : accepted ? 204 : 500).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    deliveries,
    failNext: (count) => {
      failures = count;
    },
    refuseAll: (refuse) => {
      refusing = refuse;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
