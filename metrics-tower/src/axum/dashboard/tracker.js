/*
 * app-metrics usage tracker: queues usage events in the page and posts them in batches to
 * the app-metrics API (POST <api>/usage-events). The contract is CONTRACT.md §2 and §3
 * "Tracker"; metrics-tower/tests/browser_tracker.rs pins each of its bullets in Chromium.
 *
 *   <script src="/metrics/tracker.js" data-endpoint="/api/v1/metrics/usage-events"
 *           data-auto-page-view="true" data-auto-click="true"></script>
 *
 *   AppMetrics.track({ event_type: 'form_submit', element_id: 'search', success: true });
 *   AppMetrics.track({ event_type: 'query_executed', element_id: 'q' }, { debounce: true });
 *
 * Plain JavaScript, no build step: this file is what the browser runs.
 *
 * Accounting invariant: every event track() accepts is, at any time, in exactly one of the
 * stats() counters: queued (waiting, debounced ones included), in_flight (in a POST not yet
 * answered), sent (acknowledged with 2xx, or handed to sendBeacon) or dropped (queue full,
 * refused by the server, or failed 3 times). Nothing is kept beyond 1000 queued events.
 */
(function () {
  'use strict';

  // Created once: a second copy of this script (loaded twice, or by two bundles) keeps the
  // first one's queue, listeners and timer instead of doubling them.
  if ('AppMetrics' in window) return;

  var QUEUE_CAP = 1000; // events waiting at most; more are counted dropped
  var BATCH_MAX = 1000; // events in one POST (the API takes 1..1000)
  var FLUSH_AT = 20; // a queue this long is sent at once
  var FLUSH_EVERY_MS = 10000; // otherwise the queue goes every 10 s
  var MAX_ATTEMPTS = 3;
  var BACKOFF_MS = [1000, 2000]; // waits after the 1st and 2nd failure: attempts at 0, +1 s, +3 s
  var DEBOUNCE_MS = 500;
  var ID_MAX = 100; // element ids are cut to 100 characters (CONTRACT.md §2)
  var PAGE_NAME_MAX = 255; // the API refuses longer page names, and with them the whole batch
  // sendBeacon and keepalive fetches share a 64 KiB budget per page; bodies are cut below it so
  // that a long queue still gets its first part out.
  var BEACON_MAX_BYTES = 60000;
  var CLICK_SELECTOR =
    'button, a, input[type=submit], input[type=button], [role=button], [data-track-id]';
  var FAILED = 'Failed to submit usage events after 3 attempts\u2026';

  // ----- configuration: this script tag's data- attributes -----

  var script = document.currentScript || findOwnScript();
  function findOwnScript() {
    // Only when the script runs without currentScript (an old loader): the last tag whose
    // source is tracker.js is the one that is running.
    var tags = document.querySelectorAll('script[src*="tracker.js"]');
    return tags.length ? tags[tags.length - 1] : null;
  }
  function setting(name, fallback) {
    var value = script ? script.getAttribute('data-' + name) : null;
    return value === null ? fallback : value;
  }
  function enabled(name) {
    return String(setting(name, 'true')).trim().toLowerCase() !== 'false';
  }
  // A relative endpoint resolves against the page, as a link would.
  var endpoint = new URL(setting('endpoint', '/api/v1/metrics/usage-events'), document.baseURI)
    .href;

  // ----- state -----

  var queue = []; // events ready to send, oldest first
  var debounced = new Map(); // event_type + element_id -> { event, timer }
  var batch = null; // the one POST allowed at a time, with its retries
  var flushTimer = null;
  var counts = { sent: 0, dropped: 0, leaving: 0 }; // leaving: in keepalive fetches

  // Invariant of the flush timer: whenever no batch is in flight, a timer is armed (even with
  // an empty queue), so a page idle for an hour still sends the next event 10 s after it came.
  // (The original tracker's timer died once the queue had been empty.)
  function armTimer() {
    clearTimeout(flushTimer);
    flushTimer = setTimeout(onTick, FLUSH_EVERY_MS);
  }
  function onTick() {
    flushTimer = null;
    if (queue.length > 0) send();
    else armTimer();
  }

  // ----- events -----

  function cut(text, max) {
    // By code points, so an emoji is never split in half.
    var chars = Array.from(String(text));
    return chars.length > max ? chars.slice(0, max).join('') : String(text);
  }

  // Keeps only the fields of a UsageEvent (the user is the caller, never the body) and stamps
  // the time; returns null for an event without an event_type.
  function normalise(event) {
    if (!event || typeof event.event_type !== 'string' || event.event_type === '') return null;
    var out = { event_type: event.event_type, timestamp: new Date().toISOString() };
    if (event.page_name != null) out.page_name = cut(event.page_name, PAGE_NAME_MAX);
    if (event.element_id != null) out.element_id = cut(event.element_id, ID_MAX);
    if (typeof event.success === 'boolean') out.success = event.success;
    if (event.metadata && typeof event.metadata === 'object' && !Array.isArray(event.metadata)) {
      out.metadata = event.metadata;
    }
    return out;
  }

  function waiting() {
    return queue.length + debounced.size;
  }

  function enqueue(event) {
    queue.push(event);
    if (queue.length >= FLUSH_AT && batch === null) send();
    // With a batch in flight, a full queue goes as soon as it settles (see settle()).
  }

  function track(event, options) {
    var e = normalise(event);
    if (e === null) {
      console.warn('AppMetrics.track: an event needs an event_type; ignored', event);
      return false;
    }
    var key = options && options.debounce ? e.event_type + '\u0000' + (e.element_id || '') : null;
    var pending = key === null ? undefined : debounced.get(key);
    if (pending === undefined && waiting() >= QUEUE_CAP) {
      counts.dropped += 1;
      return false;
    }
    if (key === null) {
      enqueue(e);
      return true;
    }
    // Trailing debounce: the last event of a burst goes, 500 ms after the burst ends. It holds
    // its place in the queue's cap while it waits.
    if (pending !== undefined) clearTimeout(pending.timer);
    var entry = { event: e, timer: 0 };
    entry.timer = setTimeout(function () {
      debounced.delete(key);
      enqueue(entry.event);
    }, DEBOUNCE_MS);
    debounced.set(key, entry);
    return true;
  }

  function elementId(el) {
    if (!el || typeof el.getAttribute !== 'function') return '';
    // getAttribute, not el.id: a form's .id may be a child input named "id".
    var id = el.getAttribute('data-track-id') || el.getAttribute('id');
    if (!id) id = el.tagName.toLowerCase() + '.' + (el.textContent || '').trim();
    return cut(id, ID_MAX);
  }

  function pageView(name) {
    return track({ event_type: 'page_view', page_name: name || location.pathname });
  }

  // ----- sending -----

  function post(body, keepalive) {
    return fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: body,
      credentials: 'same-origin',
      keepalive: keepalive,
    });
  }

  function retryable(status) {
    // status 0: the request failed before any answer (network error, offline, CORS).
    return status === 0 || status === 408 || status === 429 || status >= 500;
  }

  // Starts the one POST allowed at a time with the oldest queued events.
  function send() {
    clearTimeout(flushTimer);
    flushTimer = null;
    var events = queue.splice(0, BATCH_MAX);
    var done;
    batch = {
      events: events,
      body: JSON.stringify({ events: events }),
      tries: 0,
      retryTimer: null, // set while waiting between attempts
      promise: new Promise(function (resolve) { done = resolve; }),
      resolve: null,
    };
    batch.resolve = done;
    attempt(batch);
    return batch.promise;
  }

  function attempt(b) {
    b.retryTimer = null;
    b.tries += 1;
    post(b.body, false).then(
      function (res) { answered(b, res.status); },
      function () { answered(b, 0); }
    );
  }

  function answered(b, status) {
    if (b !== batch) return; // handed to a beacon meanwhile
    if (status >= 200 && status < 300) {
      settle(b, 'sent');
    } else if (!retryable(status)) {
      console.warn('Usage events refused (HTTP ' + status + '): ' + b.events.length + ' dropped');
      settle(b, 'dropped');
    } else if (b.tries >= MAX_ATTEMPTS) {
      var why = status === 0 ? 'network error' : 'HTTP ' + status;
      console.error(FAILED, '(' + b.events.length + ' events dropped; last: ' + why + ')');
      settle(b, 'dropped');
    } else {
      b.retryTimer = setTimeout(function () { attempt(b); }, BACKOFF_MS[b.tries - 1]);
    }
  }

  function settle(b, outcome) {
    counts[outcome] += b.events.length;
    batch = null;
    b.resolve(stats());
    // A queue that filled up behind this batch goes right away; otherwise the timer is re-armed
    // after every send.
    if (queue.length >= FLUSH_AT) send();
    else armTimer();
  }

  function flush() {
    if (batch !== null) return batch.promise;
    if (queue.length === 0) return Promise.resolve(stats());
    return send();
  }

  // ----- leaving the page -----

  // Splits events into JSON bodies under the beacon budget (an event too large on its own
  // still gets a body of its own, and is refused like any other).
  function bodies(events) {
    var out = [];
    var parts = [];
    var size = 0;
    var n = 0;
    var encoder = new TextEncoder();
    events.forEach(function (e) {
      var json = JSON.stringify(e);
      var bytes = encoder.encode(json).length + 1;
      if (parts.length > 0 && size + bytes > BEACON_MAX_BYTES - 16) {
        out.push({ body: '{"events":[' + parts.join(',') + ']}', count: n });
        parts = [];
        size = 0;
        n = 0;
      }
      parts.push(json);
      size += bytes;
      n += 1;
    });
    if (parts.length > 0) out.push({ body: '{"events":[' + parts.join(',') + ']}', count: n });
    return out;
  }

  // On pagehide and on visibilitychange to hidden (the last moment a page is sure to run on
  // mobile): debounced events join the queue and everything waiting goes by sendBeacon, as a
  // string (so text/plain, which needs no CORS preflight), or by a keepalive fetch if the
  // browser refuses the beacon. A batch waiting between two attempts goes too (its retry is
  // cancelled: nothing of it is on the wire, so nothing is sent twice); a POST on the wire is
  // left to finish.
  function leave() {
    debounced.forEach(function (entry) {
      clearTimeout(entry.timer);
      queue.push(entry.event);
    });
    debounced.clear();
    var events = queue.splice(0);
    var parked = null;
    if (batch !== null && batch.retryTimer !== null) {
      parked = batch;
      clearTimeout(parked.retryTimer);
      batch = null;
      events = parked.events.concat(events);
      armTimer(); // the page may become visible again
    }
    bodies(events).forEach(function (part) {
      var handed = false;
      try {
        handed = navigator.sendBeacon(endpoint, part.body);
      } catch (e) {
        handed = false;
      }
      if (handed) {
        counts.sent += part.count;
        return;
      }
      counts.leaving += part.count;
      var finish = function (outcome) {
        counts.leaving -= part.count;
        counts[outcome] += part.count;
      };
      try {
        post(part.body, true).then(
          function (res) { finish(res.ok ? 'sent' : 'dropped'); },
          function () { finish('dropped'); }
        );
      } catch (e) {
        finish('dropped');
      }
    });
    if (parked !== null) parked.resolve(stats());
  }

  // ----- the global -----

  function stats() {
    return {
      queued: waiting(),
      sent: counts.sent,
      dropped: counts.dropped,
      in_flight: (batch === null ? 0 : batch.events.length) + counts.leaving,
    };
  }

  Object.defineProperty(window, 'AppMetrics', {
    value: Object.freeze({
      track: track,
      flush: flush,
      stats: stats,
      elementId: elementId,
      pageView: pageView,
    }),
    enumerable: true,
    writable: false,
    configurable: false,
  });

  window.addEventListener('pagehide', leave);
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'hidden') leave();
  });

  if (enabled('auto-click')) {
    // Capture phase: an app handler that stops propagation does not hide the click.
    document.addEventListener(
      'click',
      function (event) {
        var t = event.target;
        var start = t && t.nodeType === 1 ? t : t && t.parentElement;
        var el = start && start.closest ? start.closest(CLICK_SELECTOR) : null;
        if (el) {
          track({ event_type: 'button_click', element_id: elementId(el), page_name: location.pathname });
        }
      },
      true
    );
  }

  armTimer();
  if (enabled('auto-page-view')) pageView();
})();
