// Points in time read from people: the command line's flags and the dashboard's search bar.

/**
 * An ISO 8601 date or date and time, or undefined. A day the month does not have is refused:
 * JavaScript's Date would roll 2026-02-30 over into 2 March without a word.
 */
export function parseIsoTime(text: string): Date | undefined {
  const date = /^(\d{4})-(\d{2})-(\d{2})(?:$|[T ])/.exec(text);
  const time = new Date(text);
  if (!date || Number.isNaN(time.getTime())) {
    return undefined;
  }
  const [year, month, day] = date.slice(1).map(Number) as [number, number, number];
  const calendar = new Date(Date.UTC(year, month - 1, day));
  const exists =
    calendar.getUTCFullYear() === year &&
    calendar.getUTCMonth() === month - 1 &&
    calendar.getUTCDate() === day;
  return exists ? time : undefined;
}
