//! `example-dashboard` as a real process: started with a scenario's
//! environment, watched through its output, signalled, and measured
//! (`VmRSS`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::counters::Counters;
use crate::error::Error;
use crate::http::{self, Request};
use crate::ledger::{Entry, Kind, Ledger};
use crate::load::{LOAD_USER, new_id};

/// The line the app prints once it accepts connections.
const LISTENING: &str = "example-dashboard listening on http://";

/// The exit line's prefix (followed by `key=value` counters).
const FLUSHED: &str = "collector flushed:";

/// How long an app may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct AppSpec {
    /// Shown in messages (`app`, `app-2`, ...).
    pub(crate) name: String,
    /// The `example-dashboard` binary.
    pub(crate) bin: PathBuf,
    /// `BIND`: fixed per scenario, so a restarted app has the same address.
    pub(crate) bind: SocketAddr,
    /// `DATABASE_URL` (usually through the proxy).
    pub(crate) database_url: String,
    /// Further environment (`METRICS_QUEUE_CAPACITY`, ...).
    pub(crate) env: Vec<(String, String)>,
}

/// A running (or exited) app process.
#[derive(Debug)]
pub(crate) struct App {
    name: String,
    addr: SocketAddr,
    child: Child,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

/// A free port on 127.0.0.1 for an app's `BIND`.
pub(crate) fn free_addr() -> Result<SocketAddr, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("finding a free port", e))
}

// ===== impl App =====

impl App {
    /// Starts the app and waits for its listening line.
    ///
    /// # Errors
    ///
    /// [`Error::App`] when it exits first or says nothing within a minute;
    /// the message holds the tail of its output.
    pub(crate) async fn start(spec: &AppSpec) -> Result<Self, Error> {
        let mut cmd = Command::new(&spec.bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BIND", spec.bind.to_string())
            .env("DATABASE_URL", &spec.database_url)
            .env("ADMIN_USERS", "admin@example.com")
            .env(
                "RUST_LOG",
                std::env::var("FAULTS_APP_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            // Plain log lines: the harness parses some (the job run lines).
            .env("NO_COLOR", "1")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", spec.bin.display()), e))?;
        let pid = child.id().unwrap_or(0);
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect(out, Arc::clone(&lines)));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect(err, Arc::clone(&lines)));
        }
        let mut app = Self {
            name: spec.name.clone(),
            addr: spec.bind,
            child,
            pid,
            lines,
            status: None,
        };
        let t0 = Instant::now();
        loop {
            if app.output().iter().any(|l| l.starts_with(LISTENING)) {
                return Ok(app);
            }
            if let Ok(Some(status)) = app.child.try_wait() {
                app.status = Some(status);
                // Let the readers catch the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(app.failure(&format!("exited before listening ({status})")));
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(app.failure("no listening line within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address it serves.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Its name in the scenario.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) with the `kill` command (the
    /// workspace forbids `unsafe`, so no libc).
    pub(crate) fn signal(&self, signal: &str) -> Result<(), Error> {
        signal_pid(self.pid, signal)
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Ok(status)) = tokio::time::timeout(timeout, self.child.wait()).await {
                self.status = Some(status);
                // The output readers may still hold the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.status
    }

    /// SIGTERM, then waits up to `timeout`; SIGKILL if it is still running.
    /// Returns the exit status and how long it took.
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        let t0 = Instant::now();
        let _ = self.signal("TERM");
        let status = self.wait(timeout).await;
        let took = t0.elapsed();
        if status.is_none() {
            let _ = self.signal("KILL");
            let _ = self.wait(Duration::from_secs(10)).await;
        }
        (status, took)
    }

    /// Every output line so far (stdout and stderr interleaved).
    pub(crate) fn output(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The counters of the exit line, once it was printed.
    pub(crate) fn exit_counters(&self) -> Option<Counters> {
        self.output()
            .iter()
            .rev()
            .find(|l| l.contains(FLUSHED) || (l.contains("collector") && l.contains("received=")))
            .map(|l| Counters::parse_line(l))
    }

    /// The collector counters from `GET /api/demo/recorded` (itself a
    /// request the app records, so it goes into `ledger`).
    pub(crate) async fn recorded(&self, ledger: &Ledger) -> Option<Counters> {
        let id = new_id();
        let req = Request::get("/api/demo/recorded")
            .header("X-Correlation-ID", &id)
            .header("X-Forwarded-Email", LOAD_USER);
        let sent_at = ledger.elapsed();
        let t0 = Instant::now();
        let told = http::send(self.addr, &req, Duration::from_secs(10)).await;
        ledger.push(Entry {
            id: Some(id),
            kind: Kind::Control,
            told: told.as_ref().map(|r| r.status).map_err(|f| *f),
            latency: t0.elapsed(),
            sent_at,
            events: Vec::new(),
        });
        let body = told.ok()?.json()?;
        Some(Counters::from_json(&body["collector"]))
    }

    fn failure(&self, what: &str) -> Error {
        let out = self.output();
        let tail = out[out.len().saturating_sub(15)..].join("\n");
        Error::App {
            name: self.name.clone(),
            message: format!("{what}; output:\n{tail}"),
        }
    }
}

async fn collect(stream: impl AsyncRead + Unpin, lines: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stream).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        if std::env::var_os("FAULTS_ECHO_APP").is_some() {
            eprintln!("  | {line}");
        }
        lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(strip_ansi(&line));
    }
}

/// `line` without ANSI colour sequences (`ESC [ ... m`), in case a logger
/// ignores `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends `signal` to `pid` with `kill -s`.
pub(crate) fn signal_pid(pid: u32, signal: &str) -> Result<(), Error> {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::io("running kill", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "kill -s {signal} {pid} failed ({status})"
        )))
    }
}

/// `VmRSS` of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[3mjob\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"rollup\" x=1"),
            "job=\"rollup\" x=1"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn reads_vm_rss() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\n"), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        let own = rss_kib(std::process::id()).expect("our own VmRSS");
        assert!(own > 0);
    }
}
