import { describe, expect, it } from 'vitest';
import { Errors, GatewayError, is } from '../errors/index.js';
import { WorkQueue, busyError } from './work-queue.js';

/** A task the test finishes by hand, recording when it started. */
function deferredTask<T>(log: string[], name: string) {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const done = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return {
    task: () => {
      log.push(`start ${name}`);
      return done;
    },
    resolve: (v: T) => resolve(v),
    reject: (e: unknown) => reject(e),
  };
}

/** Lets queued continuations run. */
const tick = () => new Promise((r) => setImmediate(r));

describe('WorkQueue', () => {
  it('runs at most `concurrency` tasks at once, the rest in arrival order (FIFO)', async () => {
    const log: string[] = [];
    const q = new WorkQueue({ concurrency: 2, maxQueue: 10 });
    const tasks = ['a', 'b', 'c', 'd', 'e'].map((n) => deferredTask<string>(log, n));
    const results = tasks.map((t) => q.run(t.task));
    await tick();
    expect(log).toEqual(['start a', 'start b']);
    expect([q.running, q.queued]).toEqual([2, 3]);
    tasks[1].resolve('b');
    await tick();
    expect(log).toEqual(['start a', 'start b', 'start c']);
    tasks[0].resolve('a');
    await tick();
    expect(log).toEqual(['start a', 'start b', 'start c', 'start d']);
    expect([q.running, q.queued]).toEqual([2, 1]);
    tasks[2].resolve('c');
    tasks[3].resolve('d');
    await tick();
    tasks[4].resolve('e');
    expect(await Promise.all(results)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(log.map((l) => l.slice(6))).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect([q.running, q.queued]).toEqual([0, 0]);
  });

  it('never exceeds the bound under a burst of quick tasks', async () => {
    const q = new WorkQueue({ concurrency: 3, maxQueue: 1000 });
    let now = 0;
    let peak = 0;
    const task = async (i: number) => {
      now++;
      peak = Math.max(peak, now);
      await new Promise((r) => setTimeout(r, i % 3));
      now--;
      return i;
    };
    const out = await Promise.all(Array.from({ length: 200 }, (_, i) => q.run(() => task(i))));
    expect(out).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(peak).toBe(3);
  });

  it('refuses at once, without running the task, when every slot is taken and the queue is full', async () => {
    const log: string[] = [];
    let rejected = 0;
    const q = new WorkQueue({ concurrency: 1, maxQueue: 2, onReject: () => rejected++ });
    const tasks = ['a', 'b', 'c'].map((n) => deferredTask<string>(log, n));
    const accepted = tasks.map((t) => q.run(t.task));
    let ran = false;
    const refused = q.run(async () => {
      ran = true;
      return 'd';
    });
    const err = await refused.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(is(err, Errors.busy)).toBe(true);
    const g = err as GatewayError;
    expect(g.status).toBe(503);
    expect(Number(g.headers?.['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(ran).toBe(false);
    expect(rejected).toBe(1);
    // The queued ones are unaffected.
    for (const [i, t] of tasks.entries()) t.resolve('abc'[i]);
    expect(await Promise.all(accepted)).toEqual(['a', 'b', 'c']);
    // Room again: accepted.
    expect(await q.run(async () => 'e')).toBe('e');
    expect(rejected).toBe(1);
  });

  it('maxQueue 0: only the running slots, nothing waits', async () => {
    const q = new WorkQueue({ concurrency: 1, maxQueue: 0 });
    const t = deferredTask<number>([], 'a');
    const first = q.run(t.task);
    await expect(q.run(async () => 2)).rejects.toMatchObject({ code: 'busy', status: 503 });
    t.resolve(1);
    expect(await first).toBe(1);
  });

  it('a failing task frees its slot and its error reaches the caller unchanged', async () => {
    const log: string[] = [];
    const q = new WorkQueue({ concurrency: 1, maxQueue: 5 });
    const a = deferredTask<string>(log, 'a');
    const b = deferredTask<string>(log, 'b');
    const ra = q.run(a.task);
    const rb = q.run(b.task);
    const boom = new Error('boom');
    a.reject(boom);
    await expect(ra).rejects.toBe(boom);
    await tick();
    expect(log).toEqual(['start a', 'start b']);
    b.resolve('b');
    expect(await rb).toBe('b');
    // A task that throws synchronously frees its slot too.
    await expect(
      q.run(() => {
        throw new Error('sync');
      }),
    ).rejects.toThrow('sync');
    expect([q.running, q.queued]).toEqual([0, 0]);
    expect(await q.run(async () => 'after')).toBe('after');
  });

  it('reports depth changes and estimates Retry-After from task times', async () => {
    const depths: number[] = [];
    const q = new WorkQueue({ concurrency: 1, maxQueue: 3, onChange: (_r, queued) => depths.push(queued) });
    // One real 30 ms task teaches the queue its task time.
    await q.run(() => new Promise((r) => setTimeout(r, 30)));
    const blockers = Array.from({ length: 4 }, () => deferredTask<void>([], 'x'));
    const runs = blockers.map((b) => q.run(b.task));
    const err = await q.run(async () => undefined).catch((e: GatewayError) => e);
    // 4 tasks ahead at ~30 ms each: well under a second, so the floor of 1 s.
    expect((err as GatewayError).headers?.['retry-after']).toBe('1');
    expect(Math.max(...depths)).toBe(3);
    for (const b of blockers) b.resolve();
    await Promise.all(runs);
    expect(depths.at(-1)).toBe(0);
  });

  it('takes a custom rejection error', async () => {
    const q = new WorkQueue({ concurrency: 1, maxQueue: 0, rejection: (s) => new Error(`full, retry in ${s}`) });
    const t = deferredTask<void>([], 'a');
    const first = q.run(t.task);
    await expect(q.run(async () => undefined)).rejects.toThrow('full, retry in 1');
    t.resolve();
    await first;
  });

  it('rejects invalid bounds', () => {
    expect(() => new WorkQueue({ concurrency: 0, maxQueue: 1 })).toThrow(/concurrency/);
    expect(() => new WorkQueue({ concurrency: 1.5, maxQueue: 1 })).toThrow(/concurrency/);
    expect(() => new WorkQueue({ concurrency: 1, maxQueue: -1 })).toThrow(/maxQueue/);
  });

  it('busyError is a 503 busy problem with Retry-After', () => {
    const e = busyError(3);
    expect(e).toBeInstanceOf(GatewayError);
    expect([e.status, e.code, e.headers]).toEqual([503, 'busy', { 'retry-after': '3' }]);
  });
});
