//! Embedded, versioned schema migrations with down scripts, applied under an
//! advisory lock and recorded with checksums.
//!
//! Why our own migrator rather than a crate: see `docs/decisions.md`
//! ("Migrations: a small migrator of our own").

use std::fmt::Write as _;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::error::Error;
use crate::schema::SchemaName;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
struct Migration {
    version: i32,
    name: &'static str,
    up: &'static str,
    down: &'static str,
}

/// Every migration this build knows, in version order. Applied migrations are
/// never edited (their checksum is verified on every run): add a new file.
static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "raw_tables",
        up: include_str!("../migrations/0001_raw_tables.up.sql"),
        down: include_str!("../migrations/0001_raw_tables.down.sql"),
    },
    Migration {
        version: 2,
        name: "aggregated_metrics",
        up: include_str!("../migrations/0002_aggregated_metrics.up.sql"),
        down: include_str!("../migrations/0002_aggregated_metrics.down.sql"),
    },
    Migration {
        version: 3,
        name: "rollup_hours",
        up: include_str!("../migrations/0003_rollup_hours.up.sql"),
        down: include_str!("../migrations/0003_rollup_hours.down.sql"),
    },
    Migration {
        version: 4,
        name: "rollup_5min_daily",
        up: include_str!("../migrations/0004_rollup_5min_daily.up.sql"),
        down: include_str!("../migrations/0004_rollup_5min_daily.down.sql"),
    },
    Migration {
        version: 5,
        name: "sketch_storage",
        up: include_str!("../migrations/0005_sketch_storage.up.sql"),
        down: include_str!("../migrations/0005_sketch_storage.down.sql"),
    },
    Migration {
        version: 6,
        name: "slowest_requests_index",
        up: include_str!("../migrations/0006_slowest_requests_index.up.sql"),
        down: include_str!("../migrations/0006_slowest_requests_index.down.sql"),
    },
];

/// First key of the two-key advisory lock taken while migrating; the second is
/// `hashtext(schema)`, so instances using different schemas do not wait on
/// each other. ("amMG": app-metrics MiGrate.)
const MIGRATE_LOCK_CLASS: i32 = 0x616D_4D47;

/// Name of the bookkeeping table inside the schema.
const BOOKKEEPING_TABLE: &str = "_migrations";

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Versions applied by this run, ascending (empty when already up to date,
    /// or when another process applied them while this one waited).
    pub applied: Vec<i32>,
    /// Versions reverted by this run, descending.
    pub reverted: Vec<i32>,
    /// The schema version after the run (0: nothing applied).
    pub current_version: i32,
}

/// Applies the embedded migrations to a schema.
///
/// Each run happens in one transaction holding a transaction-level advisory
/// lock keyed on the schema: concurrent runs (several app instances starting
/// at once) queue on the lock, the first applies what is pending and the
/// others find nothing left to do. Either every pending migration is applied
/// or none is. Applied migrations are recorded in `<schema>._migrations` with
/// a SHA-256 checksum of their SQL; a mismatch (an applied migration edited
/// afterwards) is an error and nothing runs.
///
/// # Example
///
/// ```no_run
/// # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), metrics_pg::Error> {
/// use metrics_pg::Migrator;
///
/// let report = Migrator::new("app_metrics")?.run(client).await?;
/// println!("schema at version {}, applied {:?}", report.current_version, report.applied);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Migrator {
    schema: SchemaName,
}

impl Migrator {
    /// A migrator for `schema` (validated, see [`SchemaName`]).
    pub fn new(schema: &str) -> Result<Self, Error> {
        Ok(Self {
            schema: SchemaName::new(schema)?,
        })
    }

    /// A migrator for an already validated schema name.
    pub fn for_schema(schema: SchemaName) -> Self {
        Self { schema }
    }

    /// The schema migrated.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The newest version embedded in this build.
    pub fn latest_version() -> i32 {
        MIGRATIONS.last().map_or(0, |m| m.version)
    }

    /// Applies every pending migration (creating the schema and the
    /// bookkeeping table when missing).
    pub async fn run(&self, client: &mut Client) -> Result<MigrationReport, Error> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::db("starting the migration transaction", e))?;
        self.lock_and_prepare(&tx).await?;
        let applied = self.verify_applied(&tx).await?;
        let current = applied.last().copied().unwrap_or(0);

        let mut report = MigrationReport {
            applied: Vec::new(),
            reverted: Vec::new(),
            current_version: current,
        };
        let q = self.schema.quoted();
        for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            let started = Instant::now();
            // Migrations are written without a schema prefix; search_path
            // decides where they land (and keeps their checksum independent
            // of the schema chosen). pg_catalog is always searched first, so
            // built-in functions still resolve.
            tx.batch_execute(&format!("SET LOCAL search_path TO {q}"))
                .await
                .map_err(|e| Error::db("setting search_path for a migration", e))?;
            tx.batch_execute(m.up)
                .await
                .map_err(|e| Error::db("applying a migration", e))?;
            let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            tx.execute(
                &format!(
                    "INSERT INTO {} (version, name, checksum, execution_ms) VALUES ($1, $2, $3, $4)",
                    self.schema.qualify(BOOKKEEPING_TABLE)
                ),
                &[&m.version, &m.name, &checksum(m.up), &ms],
            )
            .await
            .map_err(|e| Error::db("recording an applied migration", e))?;
            tracing::info!(schema = %self.schema, version = m.version, name = m.name, ms, "applied migration");
            report.applied.push(m.version);
            report.current_version = m.version;
        }
        tx.commit()
            .await
            .map_err(|e| Error::db("committing migrations", e))?;
        Ok(report)
    }

    /// Reverts applied migrations newer than `target` (newest first) with
    /// their down scripts, in one transaction under the same lock. `target`
    /// 0 removes every table but keeps the schema and the bookkeeping table.
    pub async fn down_to(
        &self,
        client: &mut Client,
        target: i32,
    ) -> Result<MigrationReport, Error> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::db("starting the migration transaction", e))?;
        self.lock_and_prepare(&tx).await?;
        let applied = self.verify_applied(&tx).await?;
        let q = self.schema.quoted();
        let mut report = MigrationReport {
            applied: Vec::new(),
            reverted: Vec::new(),
            current_version: applied.last().copied().unwrap_or(0),
        };
        for m in MIGRATIONS
            .iter()
            .rev()
            .filter(|m| m.version > target && applied.contains(&m.version))
        {
            tx.batch_execute(&format!("SET LOCAL search_path TO {q}"))
                .await
                .map_err(|e| Error::db("setting search_path for a migration", e))?;
            tx.batch_execute(m.down)
                .await
                .map_err(|e| Error::db("reverting a migration", e))?;
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE version = $1",
                    self.schema.qualify(BOOKKEEPING_TABLE)
                ),
                &[&m.version],
            )
            .await
            .map_err(|e| Error::db("recording a reverted migration", e))?;
            tracing::info!(schema = %self.schema, version = m.version, name = m.name, "reverted migration");
            report.reverted.push(m.version);
        }
        report.current_version = applied
            .iter()
            .copied()
            .filter(|v| *v <= target)
            .max()
            .unwrap_or(0);
        tx.commit()
            .await
            .map_err(|e| Error::db("committing migrations", e))?;
        Ok(report)
    }

    /// Takes the advisory lock, then creates the schema and the bookkeeping
    /// table if they are missing (after the lock, so concurrent first runs do
    /// not race on `CREATE`).
    async fn lock_and_prepare(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), Error> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&MIGRATE_LOCK_CLASS, &self.schema.as_str()],
        )
        .await
        .map_err(|e| Error::db("taking the migration advisory lock", e))?;
        // Only create the schema when it is missing: CREATE SCHEMA IF NOT
        // EXISTS still needs CREATE on the database, which an app role given
        // a pre-made schema by its DBA usually lacks.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.schema.as_str()],
            )
            .await
            .map_err(|e| Error::db("looking up the schema", e))?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", self.schema.quoted()))
                .await
                .map_err(|e| Error::db("creating the schema", e))?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                version      integer     PRIMARY KEY,
                name         text        NOT NULL,
                checksum     text        NOT NULL,
                applied_at   timestamptz NOT NULL DEFAULT now(),
                execution_ms bigint      NOT NULL
            )",
            self.schema.qualify(BOOKKEEPING_TABLE)
        ))
        .await
        .map_err(|e| Error::db("creating the migration bookkeeping table", e))
    }

    /// Reads the applied versions (ascending) and checks each against the
    /// embedded migrations.
    async fn verify_applied(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<Vec<i32>, Error> {
        let rows = tx
            .query(
                &format!(
                    "SELECT version, name, checksum FROM {} ORDER BY version",
                    self.schema.qualify(BOOKKEEPING_TABLE)
                ),
                &[],
            )
            .await
            .map_err(|e| Error::db("reading applied migrations", e))?;
        let mut versions = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i32 = row.get(0);
            let name: String = row.get(1);
            let recorded: String = row.get(2);
            let Some(m) = MIGRATIONS.iter().find(|m| m.version == version) else {
                return Err(Error::UnknownMigration {
                    version,
                    latest: Self::latest_version(),
                });
            };
            let embedded = checksum(m.up);
            if recorded != embedded {
                return Err(Error::ChecksumMismatch {
                    version,
                    name,
                    recorded,
                    embedded,
                });
            }
            versions.push(version);
        }
        Ok(versions)
    }
}

/// Applies every pending migration to `schema`: shorthand for
/// [`Migrator::new(schema)?.run(client)`](Migrator::run).
pub async fn migrate(client: &mut Client, schema: &str) -> Result<MigrationReport, Error> {
    Migrator::new(schema)?.run(client).await
}

/// Hex SHA-256 of a migration's SQL, with line endings normalised so a
/// checkout that turned `\n` into `\r\n` does not look like an edit.
fn checksum(sql: &str) -> String {
    let mut hasher = Sha256::new();
    for (i, line) in sql.split('\n').enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(line.strip_suffix('\r').unwrap_or(line).as_bytes());
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing_and_complete() {
        let mut prev = 0;
        for m in MIGRATIONS {
            assert_eq!(m.version, prev + 1, "versions must be 1, 2, 3, ...");
            assert!(!m.up.trim().is_empty() && !m.down.trim().is_empty());
            prev = m.version;
        }
        assert_eq!(Migrator::latest_version(), prev);
    }

    #[test]
    fn migrations_never_name_a_schema() {
        // They run under search_path; a hard-coded schema would break the
        // configurable schema name.
        for m in MIGRATIONS {
            assert!(!m.up.contains("app_metrics."), "migration {}", m.version);
            assert!(!m.down.contains("app_metrics."), "migration {}", m.version);
        }
    }

    #[test]
    fn checksum_is_stable_and_line_ending_agnostic() {
        let a = checksum("CREATE TABLE t (x int);\nSELECT 1;\n");
        let b = checksum("CREATE TABLE t (x int);\r\nSELECT 1;\r\n");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, checksum("CREATE TABLE t (x bigint);\nSELECT 1;\n"));
        // Known vector: SHA-256 of the empty string.
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
