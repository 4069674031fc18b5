import { createHash } from 'node:crypto';
import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** What the config file holds now (a digest), or undefined while it cannot be read (mid-rename). */
export function fileDigest(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return undefined;
  }
}

export interface ConfigWatchOptions {
  /** Called once the file's bytes have changed and stayed put for `debounceMs`. */
  onChange: () => void;
  /** The watch itself failed (the folder went away, say); the poll and SIGHUP still work. */
  onError?: (err: Error) => void;
  /** The digest of the bytes the running config was loaded from (a change made before the watch began is still seen). @default the file now */
  since?: string;
  /** Quiet time after the last event before the file is read. @default 300 */
  debounceMs?: number;
  /** However busy the folder, the file is read at most this long after the first event of a burst. @default 2000 */
  maxWaitMs?: number;
  /** A slow poll beside the watch: catches what the watch cannot see (the whole folder replaced). @default 5000 */
  pollMs?: number;
}

/**
 * Watches a config file for changes on disk (SPEC §2: the gateway reloads on SIGHUP and when the
 * file changes). It watches the file's folder, not the file: an editor that writes a temporary
 * file and renames it over the config, and a Kubernetes ConfigMap volume that swaps a `..data`
 * symlink, both replace the file rather than write to it, and a watch on the old file would go
 * quiet. Any event in the folder starts the debounce (a busy neighbour delays it at most
 * `maxWaitMs`); the file is then read and `onChange` runs only when its bytes differ from the
 * last ones seen, so unrelated files, touches and a burst of writes cost at most one reload. A
 * slow poll covers a folder that is replaced as a whole (the watch follows the old one).
 */
export function watchConfigFile(file: string, opts: ConfigWatchOptions): { close(): void; sync(): void } {
  const path = resolve(file);
  const debounceMs = opts.debounceMs ?? 300;
  const maxWaitMs = opts.maxWaitMs ?? 2000;
  let last = opts.since ?? fileDigest(path);
  let timer: NodeJS.Timeout | undefined;
  let firstEventAt = 0;
  const settle = () => {
    timer = undefined;
    firstEventAt = 0;
    const now = fileDigest(path);
    if (now === undefined || now === last) return;
    last = now;
    opts.onChange();
  };
  const onEvent = () => {
    const t = Date.now();
    if (!firstEventAt) firstEventAt = t;
    if (timer) clearTimeout(timer);
    timer = setTimeout(settle, Math.max(0, Math.min(debounceMs, firstEventAt + maxWaitMs - t)));
    timer.unref();
  };
  let watcher: FSWatcher | undefined;
  try {
    // persistent: false, so the watch alone never keeps the process alive.
    watcher = watch(dirname(path), { persistent: false }, onEvent);
    watcher.on('error', (e) => opts.onError?.(e));
  } catch (e) {
    opts.onError?.(e as Error);
  }
  const poll = setInterval(() => {
    if (!timer) settle();
  }, opts.pollMs ?? 5000);
  poll.unref();
  // A change made before the watch began (during start-up) is applied now.
  if (fileDigest(path) !== last) onEvent();
  return {
    close() {
      if (timer) clearTimeout(timer);
      clearInterval(poll);
      watcher?.close();
    },
    /** The file was just loaded another way (SIGHUP): its present bytes are the ones in force. */
    sync() {
      last = fileDigest(path) ?? last;
    },
  };
}
