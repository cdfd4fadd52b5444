//! `pg-throwaway`: a throwaway PostgreSQL cluster for shell scripts (the demo, benchmarks).
//!
//! Starts the same cluster as the test harness, prints where it is, and keeps it up until this
//! process gets SIGINT/SIGTERM or the `--parent-pid` process exits; then stops it and removes
//! its directory. If this process is killed outright, the harness's watchdog still removes the
//! cluster within a second.
//!
//! ```text
//! pg-throwaway [--fsync on|off] [--max-connections N] [--parent-pid PID] [--env-file PATH]
//! ```
//!
//! Output (stdout, then also `--env-file`, written atomically once the server is up, in a form
//! `source`able by sh):
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:38211/postgres
//! PGDATA=/tmp/app-metrics-pg-41230-0/data
//! PG_LOG=/tmp/app-metrics-pg-41230-0/postgres.log
//! ```

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use app_metrics_test_support::{Cluster, ClusterOptions};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: pg-throwaway [--fsync on|off] [--max-connections N] \
                     [--parent-pid PID] [--env-file PATH]\n\
                     Starts a throwaway PostgreSQL cluster, prints DATABASE_URL=... and stays up \
                     until SIGINT/SIGTERM or until PID exits. --fsync defaults to off (tests); \
                     use --fsync on for benchmarks.";

#[derive(Debug)]
struct Args {
    options: ClusterOptions,
    parent_pid: Option<u32>,
    env_file: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut options = ClusterOptions::new();
    let mut parent_pid = None;
    let mut env_file = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--fsync" => {
                options = options.fsync(match value("--fsync")?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--fsync takes on or off, not {other:?}")),
                });
            }
            "--max-connections" => {
                let n = value("--max-connections")?;
                options = options.max_connections(
                    n.parse()
                        .map_err(|_| format!("--max-connections: not a number: {n:?}"))?,
                );
            }
            "--parent-pid" => {
                let pid = value("--parent-pid")?;
                parent_pid = Some(
                    pid.parse()
                        .map_err(|_| format!("--parent-pid: not a pid: {pid:?}"))?,
                );
            }
            "--env-file" => env_file = Some(PathBuf::from(value("--env-file")?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        options,
        parent_pid,
        env_file,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("pg-throwaway: {msg}");
            }
            eprintln!("{USAGE}");
            return if msg.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let cluster = match Cluster::init(&args.options) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("pg-throwaway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = format!(
        "DATABASE_URL={}\nPGDATA={}\nPG_LOG={}\n",
        cluster.url(),
        cluster.data_dir().display(),
        cluster.log_file().display()
    );
    // The env file first: a reader of stdout may then rely on the file being there too.
    if let Some(path) = &args.env_file {
        if let Err(e) = write_atomically(path, &env) {
            eprintln!("pg-throwaway: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    print!("{env}");
    let _ = std::io::stdout().flush();

    let reason = wait_for_the_end(args.parent_pid);
    eprintln!("pg-throwaway: {reason}; stopping the cluster");
    if let Err(e) = cluster.stop() {
        eprintln!("pg-throwaway: {e}");
    }
    drop(cluster); // removes the directory
    if let Some(path) = &args.env_file {
        let _ = fs::remove_file(path);
    }
    ExitCode::SUCCESS
}

/// Blocks until SIGINT, SIGTERM, SIGHUP or the parent's exit, and says which.
fn wait_for_the_end(parent_pid: Option<u32>) -> &'static str {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let parent_gone = async {
            match parent_pid {
                // No pidfd without libc; polling /proc twice a second is cheap and close enough.
                Some(pid) => {
                    while is_alive(pid) {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
            () = parent_gone => "parent process exited",
        }
    })
}

/// Whether process `pid` exists and is not a zombie (a dead parent whose own parent does not
/// reap it stays a zombie, which for us is as good as gone).
fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_every_option() {
        let args = parse(&[
            "--fsync",
            "on",
            "--parent-pid",
            "42",
            "--env-file",
            "/tmp/x.env",
        ])
        .unwrap();
        assert_eq!(args.parent_pid, Some(42));
        assert_eq!(args.env_file.as_deref(), Some(Path::new("/tmp/x.env")));
        assert!(format!("{:?}", args.options).contains("fsync: true"));
        let args = parse(&["--max-connections", "20"]).unwrap();
        assert!(format!("{:?}", args.options).contains("max_connections: 20"));
        assert!(format!("{:?}", args.options).contains("fsync: false"));
    }

    #[test]
    fn liveness_follows_proc() {
        assert!(is_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not yet reaped: a zombie, which must count as gone.
        while is_alive(pid) {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["--fsync", "maybe"]).is_err());
        assert!(parse(&["--parent-pid"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert_eq!(parse(&["--help"]).unwrap_err(), "");
    }
}
