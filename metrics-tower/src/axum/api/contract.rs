//! The API's published constants: the default event vocabulary, the batch
//! and body limits, the custom-range slack and the committed OpenAPI
//! document. The parent re-exports them; the handlers, the parameter
//! parsing and the served document read them from here, below the router
//! that uses those modules.

use std::time::Duration;

/// The event types accepted by default: the original API's ten (see the
/// [module docs](super#default-vocabulary)).
pub const DEFAULT_EVENT_TYPES: [&str; 10] = [
    "page_view",
    "button_click",
    "form_submit",
    "query_executed",
    "model_invoked",
    "preference_changed",
    "data_source_selected",
    "schema_detected",
    "file_uploaded",
    "export_triggered",
];

/// Most events in one `POST /usage-events` batch; more is a 413.
pub const MAX_BATCH_SIZE: usize = 1_000;

/// The default body limit of `POST /usage-events`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How far ahead of the server clock a custom range's `end_date` may lie,
/// and how far beyond the 90-day horizon its `start_date`, and still be
/// served (clamped); see the [module docs](super#errors).
pub const END_DATE_SLACK: Duration = Duration::from_secs(60);

/// The committed OpenAPI 3.1 document of the API: what an API with the
/// default settings serves at `/openapi.json`. An API with other settings
/// serves [`MetricsApi::openapi_json`](super::MetricsApi::openapi_json), this document with its own values
/// filled in.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
