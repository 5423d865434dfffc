// A command that reads one group's messages refuses a group the topic lacks: a typo in --group
// would otherwise read as an empty group ("no dead letters"), which looks like good news.

import type { Mailbus } from '../client.js';
import { ERROR_CODES, MailbusError } from '../errors.js';

export async function checkGroupExists(bus: Mailbus, topic: string, group: string): Promise<void> {
  const groups = await bus.groups(topic);
  if (!groups.includes(group)) {
    throw new MailbusError(
      ERROR_CODES.INVALID_OPTION,
      `topic ${topic} has no group ${group}` +
        (groups.length > 0 ? ` (its groups: ${groups.join(', ')})` : ''),
    );
  }
}
