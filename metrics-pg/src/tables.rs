//! The storage layout as the code sees it: the raw tables and their rollup
//! kinds, the `*` key of all-endpoints rows, partition names (built and
//! parsed here only), the binary `COPY` column lists of the sink, and the
//! mirrors of the raw tables' CHECK constraints. A migration that changes
//! one of these changes this file; the tests hold both to the migrated
//! schema.

use metrics_core::{RequestRecord, UsageEvent};
use time::{Date, Month};
use tokio_postgres::types::Type;

/// The `endpoint_path`, `method` and `event_type` of the all-endpoints and
/// all-types rollup rows. Route templates start with `/` (or are
/// `<unmatched>`), so `*` never collides with a real key.
pub const ALL: &str = "*";

/// The raw tables and their rollup `metric_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Performance,
    Usage,
}

impl Kind {
    pub(crate) const ALL: [Self; 2] = [Self::Performance, Self::Usage];

    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Performance => "performance_metrics",
            Self::Usage => "usage_events",
        }
    }

    pub(crate) fn metric_type(self) -> &'static str {
        match self {
            Self::Performance => "performance",
            Self::Usage => "usage",
        }
    }

    pub(crate) fn of_table(table: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.table() == table)
    }
}

/// The raw tables, partitioned by day on `timestamp`.
pub(crate) const PARTITIONED_TABLES: [&str; 2] =
    [Kind::Performance.table_name(), Kind::Usage.table_name()];

impl Kind {
    /// [`table`](Self::table) in a `const` context.
    const fn table_name(self) -> &'static str {
        match self {
            Self::Performance => "performance_metrics",
            Self::Usage => "usage_events",
        }
    }
}

/// The partition of `table` for `day`: `table_pYYYYMMDD`.
pub(crate) fn partition_name(table: &str, day: Date) -> String {
    format!(
        "{table}_p{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// The day of a partition named by [`partition_name`] for `table`
/// (`performance_metrics_p20250309` → 2025-03-09); `None` for any other
/// name (the default partition, another table's).
pub(crate) fn parse_partition_day(table: &str, name: &str) -> Option<Date> {
    let digits = name.strip_prefix(table)?.strip_prefix("_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = digits[0..4].parse().ok()?;
    let m: u8 = digits[4..6].parse().ok()?;
    let d: u8 = digits[6..8].parse().ok()?;
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

/// The default partition of `table`, which catches rows of days without a
/// partition of their own.
pub(crate) fn default_partition_name(table: &str) -> String {
    format!("{table}_default")
}

/// Column types of `performance_metrics`, in [`REQUEST_COLUMNS`] order.
/// Spelled out so the binary encoding never depends on a type lookup at run
/// time.
pub(crate) const REQUEST_TYPES: [Type; 9] = [
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];
/// The columns the sink's `COPY` writes to `performance_metrics`.
pub(crate) const REQUEST_COLUMNS: &str = "id, \"timestamp\", endpoint, method, status_code, response_time_ms, user_id, error_type, correlation_id";

/// Column types of `usage_events`, in [`USAGE_COLUMNS`] order.
pub(crate) const USAGE_TYPES: [Type; 9] = [
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::JSONB,
];
/// The columns the sink's `COPY` writes to `usage_events`.
pub(crate) const USAGE_COLUMNS: &str =
    "id, \"timestamp\", received_at, event_type, user_id, page_name, element_id, success, metadata";

/// Mirrors the CHECK constraints of `performance_metrics`, so rows that would
/// fail them are rejected without a round trip and a bisection.
pub(crate) fn request_is_valid(r: &RequestRecord) -> bool {
    (100..=599).contains(&r.status) && r.response_time_ms.is_finite() && r.response_time_ms >= 0.0
}

/// Mirrors the CHECK constraints of `usage_events`.
pub(crate) fn usage_is_valid(e: &UsageEvent) -> bool {
    !e.event_type.is_empty() && e.metadata.as_ref().is_none_or(serde_json::Value::is_object)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use metrics_core::{Method, Route, UserId};
    use test_support::TestDb;
    use time::macros::date;

    use super::*;

    fn req(status: u16, ms: f64) -> RequestRecord {
        let mut r = RequestRecord::new(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Route::from_static("/a"),
            Method::GET,
            status,
            Duration::ZERO,
        );
        r.response_time_ms = ms;
        r
    }

    #[test]
    fn kinds_and_tables() {
        for k in Kind::ALL {
            assert_eq!(Kind::of_table(k.table()), Some(k));
            assert_eq!(k.table(), k.table_name());
        }
        assert_eq!(Kind::of_table("aggregated_metrics"), None);
        assert_eq!(PARTITIONED_TABLES, ["performance_metrics", "usage_events"]);
    }

    #[test]
    fn partition_names_parse_back() {
        let d = date!(2025 - 03 - 09);
        assert_eq!(partition_name("usage_events", d), "usage_events_p20250309");
        for table in PARTITIONED_TABLES {
            assert_eq!(
                parse_partition_day(table, &partition_name(table, d)),
                Some(d)
            );
            assert_eq!(
                parse_partition_day(table, &default_partition_name(table)),
                None
            );
        }
        assert_eq!(
            parse_partition_day("usage_events", "performance_metrics_p20250309"),
            None
        );
        assert_eq!(
            parse_partition_day("usage_events", "usage_events_p20251309"),
            None
        );
    }

    #[test]
    fn validity_mirrors_check_constraints() {
        assert!(request_is_valid(&req(100, 0.0)));
        assert!(request_is_valid(&req(599, 1.5)));
        assert!(!request_is_valid(&req(99, 1.0)));
        assert!(!request_is_valid(&req(600, 1.0)));
        assert!(!request_is_valid(&req(200, -0.1)));
        assert!(!request_is_valid(&req(200, f64::NAN)));
        assert!(!request_is_valid(&req(200, f64::INFINITY)));
        let e = UsageEvent::new("click", UserId::new("u"), UNIX_EPOCH);
        assert!(usage_is_valid(&e));
        assert!(!usage_is_valid(&UsageEvent::new(
            "",
            UserId::new("u"),
            UNIX_EPOCH
        )));
        assert!(!usage_is_valid(
            &e.clone().with_metadata(Some(serde_json::json!([1])))
        ));
        assert!(usage_is_valid(
            &e.with_metadata(Some(serde_json::json!({"a": [1]})))
        ));
    }

    /// The mirrors accept exactly what the migrated tables accept, and the
    /// COPY column lists and types are the tables' columns.
    #[tokio::test]
    async fn mirrors_and_copy_columns_match_the_migrated_schema() {
        let db = TestDb::new().await;
        let mut client = db.connect().await;
        crate::migrate::migrate(&mut client, "app_metrics")
            .await
            .unwrap();
        let statuses = [99_u16, 100, 200, 599, 600];
        let times = [-0.1, 0.0, 1.5, f64::INFINITY, f64::NAN];
        for status in statuses {
            for ms in times {
                let accepted = client
                    .execute(
                        "INSERT INTO app_metrics.performance_metrics \
                         (id, \"timestamp\", endpoint, method, status_code, response_time_ms) \
                         VALUES (gen_random_uuid(), '2023-11-14 22:13:20+00', '/a', 'GET', $1, $2)",
                        &[&i32::from(status), &ms],
                    )
                    .await
                    .is_ok();
                assert_eq!(
                    accepted,
                    request_is_valid(&req(status, ms)),
                    "{status} {ms}"
                );
            }
        }
        let metadata = [
            None,
            Some(serde_json::json!({"a": 1})),
            Some(serde_json::json!([1])),
        ];
        for event_type in ["", "click"] {
            for m in &metadata {
                let accepted = client
                    .execute(
                        "INSERT INTO app_metrics.usage_events \
                         (id, \"timestamp\", received_at, event_type, user_id, metadata) \
                         VALUES (gen_random_uuid(), '2023-11-14 22:13:20+00', now(), $1, 'u', $2)",
                        &[&event_type, m],
                    )
                    .await
                    .is_ok();
                let e = UsageEvent::new(event_type, UserId::new("u"), UNIX_EPOCH)
                    .with_metadata(m.clone());
                assert_eq!(accepted, usage_is_valid(&e), "{event_type:?} {m:?}");
            }
        }
        for (table, columns, types) in [
            ("performance_metrics", REQUEST_COLUMNS, &REQUEST_TYPES),
            ("usage_events", USAGE_COLUMNS, &USAGE_TYPES),
        ] {
            let statement = client
                .prepare(&format!("SELECT {columns} FROM app_metrics.{table}"))
                .await
                .unwrap();
            let found: Vec<&Type> = statement.columns().iter().map(|c| c.type_()).collect();
            assert_eq!(found, types.iter().collect::<Vec<_>>(), "{table}");
        }
    }
}
