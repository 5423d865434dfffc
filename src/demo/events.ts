// The demo's e-commerce events: what an order pipeline would publish, with ordering keys so that
// the events of one order form one email thread.

export const DEMO_TOPICS = ['order-created', 'payment-processed', 'inventory-update'] as const;
export const DEMO_GROUPS = ['order-service', 'analytics', 'audit-log'] as const;

export type DemoTopic = (typeof DEMO_TOPICS)[number];

export interface DemoEvent {
  topic: DemoTopic;
  key: string;
  subject: string;
  payload: Record<string, unknown>;
}

const SKUS = ['mug-blue', 'tee-l', 'tee-m', 'sticker-pack', 'notebook-a5', 'pen-black'];
const METHODS = ['card', 'paypal', 'bank-transfer'];
const WAREHOUSES = ['ams-1', 'fra-2', 'lis-1'];

function pick<T>(values: readonly T[], n: number): T {
  return values[n % values.length] as T;
}

/** The n-th event of the demo: order, payment and inventory events in turn. */
export function demoEvent(n: number): DemoEvent {
  const order = 10_000 + Math.floor(n / 3);
  const topic = pick(DEMO_TOPICS, n);
  const sku = pick(SKUS, order * 7);
  const quantity = 1 + (order % 3);
  const total = Math.round(quantity * (4.5 + (order % 20)) * 100) / 100;

  if (topic === 'order-created') {
    return {
      topic,
      key: `order-${order}`,
      subject: `[order-created] order ${order}`,
      payload: {
        orderId: order,
        customerId: `cust-${order % 997}`,
        items: [{ sku, quantity, unitPrice: total / quantity }],
        total,
        currency: 'EUR',
        createdAt: new Date().toISOString(),
      },
    };
  }
  if (topic === 'payment-processed') {
    return {
      topic,
      key: `order-${order}`,
      subject: `[payment-processed] order ${order}: ${total} EUR`,
      payload: {
        orderId: order,
        paymentId: `pay-${order}`,
        amount: total,
        currency: 'EUR',
        method: pick(METHODS, order),
        status: 'captured',
      },
    };
  }
  return {
    topic,
    key: sku,
    subject: `[inventory-update] ${sku} -${quantity}`,
    payload: { sku, delta: -quantity, warehouse: pick(WAREHOUSES, order), orderId: order },
  };
}
