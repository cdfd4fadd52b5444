// The dashboard API client: same origin, no cache, a 10 s limit per call.

const TIMEOUT_MS = 10000;

// A request the page's CSP refuses (an api_path on another origin) says so,
// instead of failing as a bare "Network error".
document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`Blocked by the Content-Security-Policy (${e.effectiveDirective}): ${e.blockedURI}`),
);
export const TIMEOUT_MESSAGE = "Data temporarily unavailable";

/** The API's path, from <meta name="app-metrics-api"> (filled by the server). */
export function apiBase() {
  const meta = document.querySelector('meta[name="app-metrics-api"]');
  return ((meta && meta.content) || "/api/v1/metrics").replace(/\/+$/, "");
}

/**
 * GETs `url` as JSON. Never throws: resolves to `{ ok: true, data }` or
 * `{ ok: false, status, message }` (status 0 for a network error or timeout).
 */
export async function getJson(url) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  try {
    const res = await fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
      signal: abort.signal,
    });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      // Not JSON (a proxy's error page, an empty body): the status speaks.
    }
    if (res.ok && body) return { ok: true, data: body };
    const message = (body && (body.message || body.detail || body.error)) || `HTTP ${res.status}`;
    return { ok: false, status: res.status, message: String(message) };
  } catch (e) {
    const message = abort.signal.aborted ? TIMEOUT_MESSAGE : "Network error";
    return { ok: false, status: 0, message };
  } finally {
    clearTimeout(timer);
  }
}
