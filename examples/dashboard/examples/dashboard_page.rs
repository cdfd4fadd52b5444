//! Drives the dashboard page of a running example app in headless Chromium
//! (the test harness's browser), for the page benchmark and the README's
//! screenshot.
//!
//! ```text
//! dashboard_page timing     --base http://127.0.0.1:8080 --admin admin@example.com [--ranges "24h 90d"] [--runs 7]
//! dashboard_page screenshot --base http://127.0.0.1:8080 --admin admin@example.com [--range 7d] --out docs/dashboard.png [--detail-out docs/dashboard-detail.png]
//! ```
//!
//! `timing` loads `<base>/metrics/?range=<r>` `--runs` times per range in a
//! fresh tab (nothing cached between loads) and prints
//! `RESULT dashboard_page range=<r> render_ms=<median> bytes=<n> ...`:
//! `render_ms` is the time from the navigation's start to the first moment
//! every widget holds its answer (the refresh is over, the cards carry
//! their values, the endpoint table and the three charts are drawn), seen
//! by a `MutationObserver` installed before the page's own scripts;
//! `bytes` is what the page and its assets cost on the wire (the
//! navigation's and every script's and style sheet's `transferSize`; the
//! API's JSON answers are data, counted apart as `api_bytes`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use test_support::browser::{Browser, Page};

/// Every widget rendered: recorded once, as milliseconds since the
/// navigation started, in `window.__renderedAt`.
const OBSERVER: &str = r#"
(() => {
  const done = () => {
    const main = document.querySelector('main');
    const total = document.querySelector('[data-testid="card-total-requests-value"]');
    const count = document.querySelector('[data-testid="endpoint-count"]');
    const charts = ['chart-performance', 'chart-usage', 'chart-event-types']
      .every((id) => { const c = document.querySelector('[data-testid="' + id + '"]');
                       return c && c.querySelector('svg *, p'); });
    return main && main.getAttribute('aria-busy') === 'false' && total &&
      total.hasAttribute('data-value') && count && /\d/.test(count.textContent) && charts;
  };
  const check = () => {
    if (window.__renderedAt === undefined && done()) {
      window.__renderedAt = performance.now();
    }
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true,
    attributes: true, characterData: true });
})();
"#;

#[derive(Debug, Deserialize)]
struct Load {
    rendered_ms: f64,
    page_bytes: u64,
    api_bytes: u64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn admin_page(browser: &Browser, admin: &str) -> Page {
    let page = browser.new_page().await;
    page.set_extra_headers(&[("x-forwarded-email", admin)])
        .await;
    page.set_viewport(1280, 900).await;
    page
}

async fn load(browser: &Browser, admin: &str, url: &str) -> Load {
    let page = admin_page(browser, admin).await;
    page.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": OBSERVER }),
    )
    .await;
    page.goto(url).await;
    page.wait_for("window.__renderedAt !== undefined", Duration::from_secs(30))
        .await;
    let load: Load = page
        .eval(
            r#"(() => {
              const nav = performance.getEntriesByType('navigation')[0];
              let page = nav.transferSize, api = 0;
              for (const r of performance.getEntriesByType('resource')) {
                if (r.initiatorType === 'fetch' || r.initiatorType === 'xmlhttprequest' ||
                    r.initiatorType === 'beacon') { api += r.transferSize; }
                else { page += r.transferSize; }
              }
              return { rendered_ms: window.__renderedAt, page_bytes: page, api_bytes: api };
            })()"#,
        )
        .await;
    page.close().await;
    load
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dashboard_page timing|screenshot --base URL --admin USER [--ranges R] [--runs N] [--range R --out PNG [--detail-out PNG]]";
    let mode = args.get(1).cloned().unwrap_or_default();
    let base = arg(&args, "--base").unwrap_or_else(|| panic!("{usage}"));
    let admin = arg(&args, "--admin").unwrap_or_else(|| "admin@example.com".to_owned());
    let browser = Browser::launch().await;
    match mode.as_str() {
        "timing" => {
            let ranges = arg(&args, "--ranges").unwrap_or_else(|| "24h 90d".to_owned());
            let runs: usize = arg(&args, "--runs").map_or(7, |r| r.parse().expect("--runs N"));
            for range in ranges.split_whitespace() {
                let url = format!("{base}/metrics/?range={range}");
                // One warm-up load (the app's caches, the browser's code cache).
                let _ = load(&browser, &admin, &url).await;
                let mut times = Vec::with_capacity(runs);
                let mut last = None;
                for _ in 0..runs {
                    let l = load(&browser, &admin, &url).await;
                    times.push(l.rendered_ms);
                    last = Some(l);
                }
                let last = last.expect("at least one run");
                let target = if range == "24h" { 1_000 } else { 1_500 };
                let ms = median(times);
                println!(
                    "RESULT dashboard_page range={range} render_ms={ms:.0} bytes={} api_bytes={} target_ms={target} ratio_to_target={:.2} page_bytes_target=60000",
                    last.page_bytes,
                    last.api_bytes,
                    ms / f64::from(target),
                );
            }
        }
        "screenshot" => {
            let out = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| panic!("{usage}")));
            let page = admin_page(&browser, &admin).await;
            page.set_viewport(1280, 1700).await;
            page.cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": OBSERVER }),
            )
            .await;
            let range = arg(&args, "--range").unwrap_or_else(|| "24h".to_owned());
            page.goto(&format!("{base}/metrics/?range={range}")).await;
            page.wait_for("window.__renderedAt !== undefined", Duration::from_secs(30))
                .await;
            page.screenshot_png(&out).await;
            println!("wrote {}", out.display());
            if let Some(detail) = arg(&args, "--detail-out") {
                // The drill-down of the slowest endpoint (the table's first
                // row by default), scrolled to the top of the viewport.
                page.eval::<serde_json::Value>(
                    "document.querySelector('[data-testid=\"endpoint-row\"] button').click()",
                )
                .await;
                page.wait_for(
                    "(() => { const v = document.querySelector('[data-testid=\"endpoint-detail\"]');\
                       return !v.hidden && v.getAttribute('aria-busy') === 'false'\
                         && v.querySelector('[data-testid=\"endpoint-detail-requests\"] tbody tr'); })()",
                    Duration::from_secs(30),
                )
                .await;
                page.eval::<serde_json::Value>(
                    "document.querySelector('[data-testid=\"endpoint-detail\"]').scrollIntoView()",
                )
                .await;
                page.screenshot_png(&PathBuf::from(&detail)).await;
                println!("wrote {detail}");
            }
        }
        _ => panic!("{usage}"),
    }
}
