// The demo pages' own behaviour, and the usage events beyond the tracker's automatic ones
// (page_view, button_click): a search is a form_submit and a query_executed, a report a
// query_executed and an export_triggered, a changed source a data_source_selected.
(function () {
  'use strict';
  var metrics = window.AppMetrics;
  var page = location.pathname;

  function track(type, elementId, metadata, success) {
    if (metrics) {
      metrics.track({ event_type: type, page_name: page, element_id: elementId,
        success: success !== false, metadata: metadata || {} });
    }
  }

  function on(id, type, handler) {
    var el = document.getElementById(id);
    if (el) el.addEventListener(type, handler);
  }

  on('search-form', 'submit', function (e) {
    e.preventDefault();
    var q = document.getElementById('q').value;
    track('form_submit', 'search-form', { field_count: 1 });
    track('query_executed', 'search-form', { query_length: q.length });
  });

  on('load-item', 'click', function (e) {
    var id = e.currentTarget.getAttribute('data-item');
    var out = document.getElementById('item-output');
    fetch('/api/demo/items/' + id, { credentials: 'same-origin' })
      .then(function (r) { return r.json(); })
      .then(function (item) { out.textContent = 'Loaded ' + item.name; })
      .catch(function () { out.textContent = 'Could not load the item'; });
  });

  on('source', 'change', function (e) {
    track('data_source_selected', 'source', { source: e.target.value });
  });

  on('run-query', 'click', function () {
    var started = performance.now();
    fetch('/api/demo/slow?ms=120', { credentials: 'same-origin' })
      .then(function (r) {
        track('query_executed', 'run-query',
          { duration_ms: Math.round(performance.now() - started) }, r.ok);
        document.getElementById('report-output').textContent = r.ok ? 'Report ready' : 'Report failed';
      });
  });

  on('export-csv', 'click', function () {
    track('export_triggered', 'export-csv', { format: 'csv' });
    document.getElementById('report-output').textContent = 'Export started';
  });
}());
