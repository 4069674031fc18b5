import { createHash } from 'node:crypto';
import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** What the config file holds now (a digest), or undefined while it cannot be read (mid-rename). */
function digest(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return undefined;
  }
}

export interface ConfigWatchOptions {
  /** Called once the file's bytes have changed and stayed put for `debounceMs`. */
  onChange: () => void;
  /** The watch itself failed (the folder went away, say); reload on SIGHUP still works. */
  onError?: (err: Error) => void;
  /** Quiet time after the last event before the file is read. @default 300 */
  debounceMs?: number;
}

/**
 * Watches a config file for changes on disk (SPEC §2: the gateway reloads on SIGHUP and when the
 * file changes). It watches the file's folder, not the file: an editor that writes a temporary
 * file and renames it over the config, and a Kubernetes ConfigMap volume that swaps a `..data`
 * symlink, both replace the file rather than write to it, and a watch on the old file would go
 * quiet. Any event in the folder starts the debounce; the file is then read and `onChange` runs
 * only when its bytes differ from the last ones seen (so unrelated files, touches and a burst of
 * writes cost at most one reload).
 */
export function watchConfigFile(file: string, opts: ConfigWatchOptions): { close(): void } {
  const path = resolve(file);
  const debounceMs = opts.debounceMs ?? 300;
  let last = digest(path);
  let timer: NodeJS.Timeout | undefined;
  const settle = () => {
    timer = undefined;
    const now = digest(path);
    if (now === undefined || now === last) return;
    last = now;
    opts.onChange();
  };
  let watcher: FSWatcher | undefined;
  try {
    // persistent: false, so the watch alone never keeps the process alive.
    watcher = watch(dirname(path), { persistent: false }, () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(settle, debounceMs);
      timer.unref();
    });
    watcher.on('error', (e) => opts.onError?.(e));
  } catch (e) {
    opts.onError?.(e as Error);
  }
  return {
    close() {
      if (timer) clearTimeout(timer);
      watcher?.close();
    },
  };
}
