// The manual clock of `Page::use_manual_clock` (test-support/src/browser/mod.rs), added to every
// document before its own scripts run. It replaces setTimeout / setInterval / clearTimeout /
// clearInterval so that a test decides when time passes (`__testClock.tick(ms)`), instead of
// sleeping for real. Date, performance.now and requestAnimationFrame are left real: timestamps
// stay honest and only the scheduling of callbacks is in the test's hands.
//
// Invariants:
// - Every timer waits for a tick, even a 0 ms one: nothing runs "by itself", so a test sees
//   exactly the callbacks it let through.
// - tick() runs due timers in due order (ties: creation order), one per macrotask, with the
//   clock set to each timer's due time while it runs; a timer created by a callback is due
//   relative to that time and runs in the same tick if it falls inside it.
// - Between two callbacks tick() yields a real task, so promise continuations and network
//   answers that are already there get to run, as between two real timer tasks.
(() => {
  'use strict';
  if (Object.prototype.hasOwnProperty.call(window, '__testClock')) return;
  const realSetTimeout = window.setTimeout.bind(window);
  const timers = new Map(); // id -> { id, due, delay, fn, args, repeat }
  let now = 0;
  let nextId = 1;

  function add(fn, delay, args, repeat) {
    const ms = Math.max(0, Number(delay) || 0);
    const id = nextId++;
    timers.set(id, { id, due: now + ms, delay: ms, fn, args, repeat });
    return id;
  }
  function clear(id) { timers.delete(id); }

  window.setTimeout = function setTimeout(fn, delay, ...args) { return add(fn, delay, args, false); };
  window.setInterval = function setInterval(fn, delay, ...args) { return add(fn, delay, args, true); };
  window.clearTimeout = function clearTimeout(id) { clear(id); };
  window.clearInterval = function clearInterval(id) { clear(id); };

  const nextTask = () => new Promise((resolve) => realSetTimeout(resolve, 0));

  function earliestDueBy(limit) {
    let best = null;
    for (const t of timers.values()) {
      if (t.due <= limit && (best === null || t.due < best.due || (t.due === best.due && t.id < best.id))) best = t;
    }
    return best;
  }

  async function tick(ms) {
    const target = now + Math.max(0, Number(ms) || 0);
    for (;;) {
      const t = earliestDueBy(target);
      if (t === null) break;
      now = t.due;
      if (t.repeat) t.due = now + Math.max(1, t.delay); else timers.delete(t.id);
      try {
        if (typeof t.fn === 'function') t.fn(...t.args); else (0, eval)(String(t.fn));
      } catch (e) {
        // Report as an uncaught exception would be, without stopping the clock.
        realSetTimeout(() => { throw e; }, 0);
      }
      await nextTask();
    }
    now = target;
    await nextTask();
    return now;
  }

  Object.defineProperty(window, '__testClock', {
    enumerable: false,
    value: Object.freeze({
      tick,
      now: () => now,
      pending: () => [...timers.values()]
        .sort((a, b) => a.due - b.due || a.id - b.id)
        .map((t) => ({ delay_ms: t.delay, due_in_ms: t.due - now, repeat: t.repeat })),
    }),
  });
})();
