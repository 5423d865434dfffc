// Progress of a long operation (replaying or purging thousands of messages): a bar on a
// terminal, and on anything else (a file, a pipe, CI's log) a plain line now and then. Both go
// to stderr, so that what a command prints on stdout stays the same.

import cliProgress from 'cli-progress';

/** Without a terminal, a line after about every this much of the work (and at the end). */
const LINE_EVERY_FRACTION = 0.1;

export interface Progress {
  /** `done` of the total are finished. */
  update(done: number): void;
  /** Ends the bar or prints the last line. Safe to call twice. */
  stop(): void;
}

export function startProgress(label: string, total: number): Progress {
  const stream = process.stderr;
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: `${label} [{bar}] {value}/{total} {percentage}% {eta_formatted} left`,
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0);
    let stopped = false;
    return {
      update: (done) => bar.update(done),
      stop: () => {
        if (!stopped) {
          stopped = true;
          bar.stop();
        }
      },
    };
  }

  const step = Math.max(1, Math.ceil(total * LINE_EVERY_FRACTION));
  let printed = 0;
  let last = 0;
  const line = (done: number): void => {
    stream.write(`mailbus: ${label} ${done}/${total}\n`);
    printed = done;
  };
  return {
    update: (done) => {
      last = done;
      if (done - printed >= step && done < total) {
        line(done);
      }
    },
    stop: () => {
      if (printed !== last || last === 0) {
        line(last);
      }
    },
  };
}

/** Fewer messages than this are done too fast to need progress shown. */
export const MIN_PROGRESS_MESSAGES = 100;

/**
 * A progress display for an operation that reports (done, total) as it goes: started at its
 * first report of MIN_PROGRESS_MESSAGES or more, so a quick operation shows none.
 */
export function progressOf(label: string) {
  let progress: Progress | undefined;
  return {
    listen: (done: number, total: number): void => {
      if (total < MIN_PROGRESS_MESSAGES) {
        return;
      }
      progress ??= startProgress(label, total);
      progress.update(done);
    },
    stop: (): void => progress?.stop(),
  };
}
