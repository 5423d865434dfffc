// What the demo leaves behind for the dashboard to show: a few orders that the order service
// rejects for good, so that the queue has dead letters to look at and replay, and that the
// other groups have not consumed yet, so that it has waiting messages too.

import type { Mailbus } from '../client.js';
import { DeadLetterError } from '../consumer/errors.js';

/** How many rejected orders the demo leaves. */
export const REJECTED_ORDERS = 3;

/** Gives up when the order service has not rejected them by then. */
const REJECT_TIMEOUT_MS = 30_000;

export const REJECTED_TOPIC = 'order-created';
export const REJECTING_GROUP = 'order-service';

/** Publishes the rejected orders and has the order service dead-letter them. */
export async function leaveRejectedOrders(bus: Mailbus): Promise<number> {
  const orders = Array.from({ length: REJECTED_ORDERS }, (_, n) => ({
    key: `customer-${900 + n}`,
    subject: `[order-created] order ${99_000 + n} (total below zero)`,
    payload: { orderId: 99_000 + n, customerId: `cust-${900 + n}`, items: [], total: -1 },
  }));
  await bus.publishBatch(REJECTED_TOPIC, orders);

  const worker = bus.consume(
    REJECTED_TOPIC,
    (message) => {
      const { total } = message.payload as { total?: number };
      if (typeof total === 'number' && total < 0) {
        throw new DeadLetterError(`order total ${total} is below zero`);
      }
    },
    { group: REJECTING_GROUP, maxMessages: REJECTED_ORDERS, idleTimeoutMs: REJECT_TIMEOUT_MS },
  );
  return (await worker.done).deadLettered;
}
