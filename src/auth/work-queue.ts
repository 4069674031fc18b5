import { Errors, GatewayError } from '../errors/index.js';

/** {@link WorkQueue} options. */
export interface WorkQueueOptions {
  /** Tasks running at once (≥ 1). */
  concurrency: number;
  /** Tasks allowed to wait for a slot (≥ 0); one more is refused. */
  maxQueue: number;
  /** Called once per refused task (e.g. to count a metric). */
  onReject?: () => void;
  /** Called whenever the number of running or waiting tasks changes. */
  onChange?: (running: number, queued: number) => void;
  /** The error a refused task rejects with (given the suggested Retry-After in seconds). @default {@link busyError} */
  rejection?: (retryAfterSeconds: number) => Error;
}

/** 503 `busy` with `Retry-After`: the password-hashing queue is full (SPEC §12). */
export function busyError(retryAfterSeconds: number): GatewayError {
  return new GatewayError(Errors.busy, 'The gateway is busy checking other sign-ins; try again in a moment.', {
    headers: { 'retry-after': String(retryAfterSeconds) },
  });
}

/**
 * A bounded FIFO of async tasks: at most `concurrency` run at once, at most `maxQueue` wait
 * for their turn, and any further task is refused at once (no waiting, no work done). Used for
 * argon2, whose every run takes a libuv threadpool thread and ~20 MiB for tens of
 * milliseconds: unbounded, a burst of sign-ins takes every core and starves proxied traffic.
 */
export class WorkQueue {
  readonly concurrency: number;
  readonly maxQueue: number;
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  /** Moving average of a task's run time (ms), for the Retry-After estimate. */
  private avgMs = 0;

  constructor(private readonly opts: WorkQueueOptions) {
    if (!Number.isInteger(opts.concurrency) || opts.concurrency < 1) throw new RangeError('concurrency must be a positive integer');
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) throw new RangeError('maxQueue must be a non-negative integer');
    this.concurrency = opts.concurrency;
    this.maxQueue = opts.maxQueue;
  }

  /** Tasks running now. */
  get running(): number {
    return this.active;
  }

  /** Tasks waiting for a slot. */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Runs `task` when a slot is free (in arrival order). Rejects at once, without calling
   * `task`, when every slot is taken and the queue is full. A task's failure frees its slot
   * and reaches the caller unchanged.
   */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) {
      if (this.waiting.length >= this.maxQueue) {
        this.opts.onReject?.();
        throw (this.opts.rejection ?? busyError)(this.retryAfterSeconds());
      }
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        this.changed();
      });
      // The slot was handed over by the task that finished (active was not decremented).
    } else {
      this.active++;
      this.changed();
    }
    const started = performance.now();
    try {
      return await task();
    } finally {
      const ms = performance.now() - started;
      this.avgMs = this.avgMs === 0 ? ms : this.avgMs * 0.8 + ms * 0.2;
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
      this.changed();
    }
  }

  /** Whole seconds until the queue as it stands now has drained (at least 1). */
  retryAfterSeconds(): number {
    const waves = Math.ceil((this.active + this.waiting.length) / this.concurrency);
    return Math.max(1, Math.min(60, Math.ceil((waves * this.avgMs) / 1000)));
  }

  private changed(): void {
    this.opts.onChange?.(this.active, this.waiting.length);
  }
}
