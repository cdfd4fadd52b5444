//! Hostile ingest: 10,000 seeded hostile requests (see [`crate::hostile`])
//! beside light normal load. Every answer must be a 202 or a typed 4xx
//! (`{"error", "message", "status_code"}`), never a 5xx; an ambiguous or
//! malformed identity is refused; a bad correlation id is never echoed;
//! and the database ends with exactly the events that were accepted, none
//! of them invalid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::hostile::{self, Case, EVENT_TYPES, HOSTILE_USER, Must};
use crate::http::{self, Request};
use crate::ledger::{Entry, Kind, Ledger};
use crate::load::{INGEST_PATH, Load, LoadSpec, new_id};
use crate::pg::SCHEMA;
use crate::report::Outcome;
use crate::scenarios::Ctx;
use crate::scenarios::rig::{Expect, Rig};

/// How many hostile requests.
const CASES: u64 = 10_000;

/// Violations of each kind shown in the notes.
const EXAMPLES: usize = 3;

/// One hostile request started every this long (2,500/s): beside the
/// normal load, not a flood that saturates a 2-core machine, which would
/// measure the CPU rather than the app (the normal p99 is checked).
const PACE: Duration = Duration::from_micros(400);

/// Hostile requests in flight at once.
const CONCURRENCY: usize = 16;

/// What the answers showed, summed.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Up to [`EXAMPLES`] violations, to start debugging from.
    examples: Vec<String>,
    accepted_requests: u64,
    accepted_events: u64,
    typed_4xx: u64,
    head_level: u64,
    untyped_4xx: u64,
    fivexx: u64,
    other_status: u64,
    failures: u64,
    refuse_violations: u64,
    bad_id_echoed: u64,
}

impl Tally {
    fn add(&mut self, o: &Self) {
        for e in &o.examples {
            // A few of each kind: one frequent kind must not hide the others.
            let kind = e.split(':').next().unwrap_or_default();
            let same = self.examples.iter().filter(|x| x.starts_with(kind)).count();
            if same < EXAMPLES {
                self.examples.push(e.clone());
            }
        }
        self.accepted_requests += o.accepted_requests;
        self.accepted_events += o.accepted_events;
        self.typed_4xx += o.typed_4xx;
        self.head_level += o.head_level;
        self.untyped_4xx += o.untyped_4xx;
        self.fivexx += o.fivexx;
        self.other_status += o.other_status;
        self.failures += o.failures;
        self.refuse_violations += o.refuse_violations;
        self.bad_id_echoed += o.bad_id_echoed;
    }
}

/// The scenario.
pub(crate) async fn hostile_bodies(ctx: &mut Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new("hostile_bodies");
    let seed: u64 = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    o.figure("seed", seed);
    let rig = Rig::start(ctx).await?;
    let mut app = rig.app("app", &[]).await?;
    let normal = LoadSpec {
        rate: 50,
        ingest_every: 0,
        ..LoadSpec::default()
    };
    let load = Load::start(app.addr(), normal, rig.ledger.clone());

    let t0 = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    let mut tally = Tally::default();
    let start = tokio::time::Instant::now();
    for i in 0..CASES {
        tokio::time::sleep_until(start + PACE * u32::try_from(i).unwrap_or(u32::MAX)).await;
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Setup("semaphore closed".to_owned()))?;
        let (addr, ledger) = (app.addr(), Arc::clone(&rig.ledger));
        tasks.spawn(async move {
            let t = one(addr, &hostile::case(seed, i, now), &ledger).await;
            drop(permit);
            t
        });
        while let Some(Ok(t)) = tasks.try_join_next() {
            tally.add(&t);
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(t) = r {
            tally.add(&t);
        }
    }
    o.figure("cases", CASES);
    o.figure("cases_s", format!("{:.1}", t0.elapsed().as_secs_f64()));
    let _ = load.stop().await;
    let (status, _) = app.terminate(Duration::from_secs(45)).await;
    o.check("exit", status.is_some_and(|s| s.success()));

    o.figure("accepted_requests", tally.accepted_requests);
    o.figure("accepted_events", tally.accepted_events);
    o.figure("typed_4xx", tally.typed_4xx);
    o.figure("head_level", tally.head_level);
    o.figure("untyped_4xx", tally.untyped_4xx);
    o.figure("fivexx", tally.fivexx);
    o.figure("other_status", tally.other_status);
    o.figure("failures", tally.failures);
    o.figure("identity_not_refused", tally.refuse_violations);
    o.figure("bad_id_echoed", tally.bad_id_echoed);
    for example in &tally.examples {
        o.note(example);
    }
    o.check("no_5xx", tally.fivexx == 0);
    o.check(
        "typed_4xx_only",
        tally.untyped_4xx == 0 && tally.other_status == 0,
    );
    o.check("no_failures", tally.failures == 0);
    o.check("identity_refused", tally.refuse_violations == 0);
    o.check("bad_id_not_echoed", tally.bad_id_echoed == 0);

    let client = rig.pg.connect().await?;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {SCHEMA}.usage_events"), &[])
        .await
        .map_err(Error::db("counting usage rows"))?
        .get(0);
    let rows = rows.unsigned_abs();
    o.figure("event_rows", rows);
    o.check("rows_eq_accepted", rows == tally.accepted_events);
    let invalid = invalid_rows(&client).await?;
    let total: u64 = invalid.iter().map(|(_, n)| n).sum();
    o.figure("invalid_rows", total);
    for (rule, n) in invalid.iter().filter(|(_, n)| *n > 0) {
        o.note(&format!("invalid rows ({rule}): {n}"));
    }
    o.check("no_invalid_row", total == 0);
    drop(client);

    let expect = Expect {
        event_ids: false,
        ..Expect::default()
    };
    rig.finish(ctx, &mut o, &[app.exit_counters()], expect)
        .await?;
    Ok(o)
}

/// Sends one case and judges its answer.
async fn one(addr: std::net::SocketAddr, case: &Case, ledger: &Ledger) -> Tally {
    let mut req = match &case.content_type {
        Some(ct) => Request::post(INGEST_PATH, ct, case.body.clone()),
        None => Request::post_untyped(INGEST_PATH, case.body.clone()),
    };
    for (name, value) in &case.identity {
        req = req.header(name, value);
    }
    for (name, value) in &case.extra {
        req = req.header(name, value);
    }
    let (sent_id, bad_id) = match &case.correlation {
        Some((bad, _)) => {
            req = req.header("X-Correlation-ID", bad);
            (None, Some(bad.clone()))
        }
        None => {
            let id = new_id();
            req = req.header("X-Correlation-ID", &id);
            (Some(id), None)
        }
    };
    let sent_at = ledger.elapsed();
    let t0 = Instant::now();
    let told = http::send(addr, &req, Duration::from_secs(15)).await;
    let mut t = Tally::default();
    match &told {
        Err(_) if case.must == Must::HeadLevel => t.head_level += 1,
        Err(_) => t.failures += 1,
        Ok(r) => {
            if let Some(bad) = &bad_id {
                if r.header("x-correlation-id").map(str::as_bytes) == Some(bad.as_slice()) {
                    t.bad_id_echoed += 1;
                }
            }
            match r.status {
                202 => {
                    let accepted = r
                        .json()
                        .and_then(|v| v["events_received"].as_u64())
                        .unwrap_or(0);
                    t.accepted_requests += 1;
                    t.accepted_events += accepted;
                    if case.must == Must::Refuse {
                        t.refuse_violations += 1;
                    }
                }
                400..=499 => {
                    // The error shape, or the contract's fixed 413 for too many events.
                    let typed = r.json().is_some_and(|v| {
                        (v["error"].is_string()
                            && v["message"].is_string()
                            && v["status_code"].as_u64() == Some(u64::from(r.status)))
                            || (r.status == 413
                                && v["detail"].is_string()
                                && v["max_batch_size"].is_u64())
                    });
                    if typed {
                        t.typed_4xx += 1;
                    } else if case.must == Must::HeadLevel && matches!(r.status, 400 | 431) {
                        t.head_level += 1;
                    } else {
                        t.untyped_4xx += 1;
                    }
                }
                500..=599 => t.fivexx += 1,
                _ => t.other_status += 1,
            }
        }
    }
    let kinds = [
        ("failure", t.failures),
        ("5xx", t.fivexx),
        ("untyped_4xx", t.untyped_4xx),
        ("other_status", t.other_status),
        ("identity_not_refused", t.refuse_violations),
        ("bad_id_echoed", t.bad_id_echoed),
    ];
    for (kind, n) in kinds {
        if n > 0 {
            t.examples.push(describe(kind, case, &told));
        }
    }
    ledger.push(Entry {
        id: sent_id,
        kind: Kind::Hostile,
        told: told.map(|r| r.status),
        latency: t0.elapsed(),
        sent_at,
        events: Vec::new(),
    });
    t
}

/// One violation, for the notes: what was sent (the start of the body,
/// the identity headers) and what came back.
fn describe(kind: &str, case: &Case, told: &Result<http::Response, http::Failure>) -> String {
    let show = |b: &[u8]| {
        let text = String::from_utf8_lossy(&b[..b.len().min(90)]).into_owned();
        format!("{text:?}")
    };
    let identity: Vec<String> = case.identity.iter().map(|(_, v)| show(v)).collect();
    let answer = match told {
        Ok(r) => format!("{} {}", r.status, show(&r.body)),
        Err(f) => f.to_string(),
    };
    let correlation = case.correlation.as_ref().map(|(id, _)| show(id));
    format!(
        "{kind}: {} content-type={:?} identity=[{}] correlation={correlation:?} body={} -> {answer}",
        case.category,
        case.content_type,
        identity.join(","),
        show(&case.body)
    )
}

/// Stored events that break a rule of the ingest contract, or carry another
/// user than the caller, per rule (a row may break several).
async fn invalid_rows(client: &tokio_postgres::Client) -> Result<Vec<(&'static str, u64)>, Error> {
    const RULES: [(&str, &str); 6] = [
        ("other_user", "user_id <> $1"),
        ("unknown_type", "NOT (event_type = ANY($2))"),
        ("long_page_name", "char_length(page_name) > 255"),
        ("long_element_id", "char_length(element_id) > 255"),
        (
            "bad_metadata",
            "metadata IS NOT NULL AND (jsonb_typeof(metadata) <> 'object' \
             OR octet_length(metadata::text) > 20000)",
        ),
        (
            "timestamp_out_of_window",
            "\"timestamp\" < received_at - interval '24 hours 1 minute' \
             OR \"timestamp\" > received_at + interval '5 minutes 1 second'",
        ),
    ];
    let types: Vec<String> = EVENT_TYPES.iter().map(|s| (*s).to_owned()).collect();
    let columns: Vec<String> = RULES
        .iter()
        .map(|(_, rule)| format!("count(*) FILTER (WHERE {rule})"))
        .collect();
    let row = client
        .query_one(
            &format!("SELECT {} FROM {SCHEMA}.usage_events", columns.join(", ")),
            &[&HOSTILE_USER, &types],
        )
        .await
        .map_err(Error::db("looking for invalid rows"))?;
    Ok(RULES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, row.get::<_, i64>(i).unsigned_abs()))
        .collect())
}
