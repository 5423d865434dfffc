// Facts about the machine the figures come from: cores, load, which storage a path is on, and
// the versions of the peer clients and servers.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

interface Mount {
  device: string;
  point: string;
  type: string;
}

function mounts(): Mount[] {
  try {
    return fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((line) => line.split(' '))
      .filter((fields) => fields.length >= 3)
      .map(([device, point, type]) => ({
        device: device as string,
        point: (point as string).replace(/\\040/g, ' '),
        type: type as string,
      }));
  } catch {
    return [];
  }
}

const MEMORY_FILE_SYSTEMS = new Set(['tmpfs', 'ramfs', 'devtmpfs']);

/** "tmpfs" or "disk (ext4 on /dev/vda)" for the file system holding `target`. */
export function storageOf(target: string): string {
  let real = path.resolve(target);
  // The path may not exist yet: look at its nearest existing parent.
  for (let i = 0; i < 64 && !fs.existsSync(real); i += 1) {
    real = path.dirname(real);
  }
  real = fs.realpathSync(real);
  const match = mounts()
    .filter((m) => real === m.point || real.startsWith(m.point === '/' ? '/' : `${m.point}/`))
    .sort((a, b) => b.point.length - a.point.length)[0];
  if (!match) {
    return 'unknown storage';
  }
  return MEMORY_FILE_SYSTEMS.has(match.type) ? 'tmpfs' : `disk (${match.type} on ${match.device})`;
}

export function isMemoryStorage(description: string): boolean {
  return description === 'tmpfs';
}

export interface Machine {
  node: string;
  platform: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  loadAverage: number[];
}

export function machine(): Machine {
  return {
    node: process.version,
    platform: `${os.type()} ${os.release()}`,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadAverage: os.loadavg().map((load) => Math.round(load * 100) / 100),
  };
}

/** The installed version of an npm package of this repository, from its package.json. */
export function packageVersion(repoRoot: string, name: string): string {
  try {
    const file = path.join(repoRoot, 'node_modules', name, 'package.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version?: string }).version ?? '?';
  } catch {
    return 'not installed';
  }
}

/** The first line a command prints, or undefined when it cannot run. */
export function commandOutput(command: string, args: string[]): string | undefined {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 5000 });
  if (result.status !== 0) {
    return undefined;
  }
  return result.stdout.trim().split('\n')[0];
}
