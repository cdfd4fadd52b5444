//! What a job run reports: rows read and written, hours and days done.

use std::fmt;
use std::time::Duration;

/// What one run of a job did. Printed by `metrics-aggregate` as its summary
/// line (the `Display` form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobReport {
    /// `"rollup"` or `"retention"`.
    pub job: &'static str,
    /// Another instance held the job's advisory lock, so this run did nothing.
    pub skipped: bool,
    /// Hours with raw rows rolled up (or rolled again after late rows), both
    /// raw tables.
    pub hours_rolled: u64,
    /// Raw rows read by those rollups.
    pub raw_rows_rolled: u64,
    /// `aggregated_metrics` rows written (inserted or updated).
    pub rollup_rows_written: u64,
    /// Raw day partitions dropped by retention, as `table_pYYYYMMDD`.
    pub partitions_dropped: Vec<String>,
    /// Raw rows removed with those partitions.
    pub raw_rows_dropped: u64,
    /// Rollup rows deleted because they were older than the rollup horizon.
    pub rollup_rows_deleted: u64,
    /// Estimated raw rows after the run (the governance count), when checked.
    pub raw_rows_estimate: Option<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped {
            return write!(
                f,
                "{}: skipped (another instance holds the job's advisory lock)",
                self.job
            );
        }
        write!(
            f,
            "{}: {} hours rolled ({} raw rows -> {} rollup rows)",
            self.job, self.hours_rolled, self.raw_rows_rolled, self.rollup_rows_written
        )?;
        if self.job == "retention" {
            write!(
                f,
                ", {} partitions dropped ({} raw rows), {} rollup rows deleted",
                self.partitions_dropped.len(),
                self.raw_rows_dropped,
                self.rollup_rows_deleted
            )?;
        }
        if let Some(n) = self.raw_rows_estimate {
            write!(f, ", ~{} raw rows stored", thousands(n))?;
        }
        write!(f, " in {:.2}s", self.elapsed.as_secs_f64())
    }
}

/// `1234567` → `"1,234,567"`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(800_000), "800,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn report_line() {
        let r = JobReport {
            job: "rollup",
            hours_rolled: 2,
            raw_rows_rolled: 1_500,
            rollup_rows_written: 8,
            raw_rows_estimate: Some(1_234_567),
            elapsed: Duration::from_millis(250),
            ..JobReport::default()
        };
        assert_eq!(
            r.to_string(),
            "rollup: 2 hours rolled (1500 raw rows -> 8 rollup rows), ~1,234,567 raw rows stored in 0.25s"
        );
        let skipped = JobReport {
            job: "retention",
            skipped: true,
            ..JobReport::default()
        };
        assert!(skipped.to_string().contains("skipped"));
    }
}
