//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a free
//! port, removed when it is dropped or when the process that made it exits.
//!
//! Everything here is blocking `std` code on purpose: each `#[tokio::test]` has its own runtime,
//! and a server shared by all the tests of a process must not belong to any one of them.

use std::{
    env,
    ffi::OsString,
    fs,
    io::{self, Read, Seek, SeekFrom, Write},
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::Error;

/// The user the cluster runs as when we are root and no `postgres` user exists.
const FALLBACK_USER: &str = "app-metrics-pg";

/// The superuser role `initdb` creates; the same name whoever runs the tests.
const SUPERUSER: &str = "postgres";

/// How many free ports to try before giving up (another process may grab the one we picked
/// between our probe and the server's bind).
const PORT_ATTEMPTS: usize = 8;

/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Environment variables that would make the server tools use another cluster or port.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGUSER",
    "PGDATABASE",
];

/// Settings for a throwaway cluster.
///
/// The defaults suit tests: no `fsync` (a crash loses the cluster anyway) and enough
/// connections for many tests in parallel. Benchmarks should keep `fsync` on, so that what
/// they measure resembles a real server.
///
/// ```
/// use app_metrics_test_support::ClusterOptions;
///
/// let bench = ClusterOptions::new().fsync(true).max_connections(50);
/// # let _ = bench;
/// ```
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    fsync: bool,
    max_connections: u32,
    settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            fsync: false,
            max_connections: 200,
            settings: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Test defaults: `fsync = off` (with `synchronous_commit` and `full_page_writes` off too),
    /// `max_connections = 200`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the server syncs to disk (`fsync`). Off by default; turn it on for benchmarks.
    #[must_use]
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// The server's `max_connections` (default 200).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Any other `postgresql.conf` line, `name = value`; `value` is written verbatim, so quote
    /// strings yourself (`.setting("log_statement", "'all'")`).
    #[must_use]
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A PostgreSQL cluster in a temporary directory, listening on `127.0.0.1` on a free port.
///
/// [`Cluster::init`] runs `initdb` and starts the server; dropping the value stops it
/// (`-m immediate`) and deletes the directory. Because statics are never dropped, `init` also
/// starts a small watchdog shell process that does the same once this process has exited, even
/// after a panic or `SIGKILL`; so a cluster never outlives its process by more than a second.
///
/// When the process runs as root (as CI does), `initdb` would refuse, so the server runs as an
/// unprivileged user: `APP_METRICS_PG_USER` if set, else `postgres` if it exists, else a system
/// user `app-metrics-pg` created with `useradd`. The server binaries are taken from
/// `APP_METRICS_PG_BIN` if set (and only from there), else `PATH`, then
/// `/usr/lib/postgresql/*/bin` (newest first).
///
/// Tests normally use [`TestDb`](crate::TestDb) and [`TestServer`](crate::TestServer), which wrap
/// this; scripts use the `pg-throwaway` binary.
///
/// # Example
///
/// ```
/// use app_metrics_test_support::{Cluster, ClusterOptions};
///
/// let cluster = Cluster::init(&ClusterOptions::new()).expect("a throwaway cluster");
/// assert!(cluster.url().starts_with("postgres://postgres@127.0.0.1:"));
/// assert!(cluster.data_dir().join("PG_VERSION").exists());
/// let dir = cluster.base_dir().to_owned();
/// drop(cluster);
/// assert!(!dir.exists());
/// ```
#[derive(Debug)]
pub struct Cluster {
    bins: Binaries,
    runner: Runner,
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// Guards start/stop so that two callers never race `pg_ctl` on one data directory.
    running: Mutex<bool>,
    watchdog: Option<Child>,
}

// ===== impl Cluster =====

impl Cluster {
    /// Creates and starts a cluster: finds the binaries, picks the user, runs `initdb`, writes
    /// the settings and starts the server on a free port.
    ///
    /// # Errors
    ///
    /// [`Error::BinariesNotFound`] without PostgreSQL, [`Error::NoUser`] as root without a user
    /// to run it as, [`Error::Command`] / [`Error::Startup`] when `initdb` or the server fails
    /// (with their output or log), [`Error::Io`] for file system failures.
    pub fn init(options: &ClusterOptions) -> Result<Self, Error> {
        let bins = Binaries::find()?;
        let runner = Runner::for_current_user()?;
        let base = make_base_dir(&runner)?;
        let mut cluster = Self {
            data: base.join("data"),
            log: base.join("postgres.log"),
            base,
            bins,
            runner,
            port: 0,
            running: Mutex::new(false),
            watchdog: None,
        };
        // From here on, an error drops `cluster`, whose Drop removes the directory; the
        // watchdog comes first so that even a crash during initdb leaves nothing behind.
        cluster.watchdog = Some(cluster.spawn_watchdog(std::process::id())?);
        cluster.initdb()?;
        cluster.write_settings(options)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// The superuser connection string for the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for(SUPERUSER)
    }

    /// The superuser connection string for database `dbname`.
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The TCP port the server listens on (on `127.0.0.1`); it stays the same across
    /// [`stop`](Self::stop) and [`start`](Self::start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding everything: the data directory, the Unix socket and the
    /// server log. Removed on drop.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log file, useful when a test wants to see what the server said.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Whether the server is running (as far as this value knows: it was started and not
    /// stopped through it).
    pub fn is_running(&self) -> bool {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are cut, as in an outage) and
    /// waits until it is down. Does nothing if it is already stopped.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when `pg_ctl` fails.
    pub fn stop(&self) -> Result<(), Error> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running {
            self.pg_ctl(&["-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS, "stop"])?;
            *running = false;
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and data directory.
    /// Does nothing if it is running.
    ///
    /// # Errors
    ///
    /// [`Error::Startup`] when the server does not come up (for example because another
    /// process took the port meanwhile).
    pub fn start(&self) -> Result<(), Error> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if !*running {
            self.pg_ctl_start()?;
            *running = true;
        }
        Ok(())
    }

    /// The postmaster's process id (from `postmaster.pid`), while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Crashes the server: `SIGKILL` to the postmaster (no shutdown checkpoint; its backends
    /// notice and exit on their own), waits until it and its children are gone, and marks the
    /// server stopped, so that [`start`](Self::start) runs crash recovery on the same port.
    ///
    /// # Errors
    ///
    /// [`Error::Command`] when `kill` fails, [`Error::Startup`] when processes of the old
    /// server are still alive after a minute.
    pub fn kill(&self) -> Result<(), Error> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pid) = self.postmaster_pid().filter(|_| *running) else {
            return Ok(());
        };
        // The children first: once the postmaster is gone they are re-parented and can no
        // longer be told from other processes.
        let children = child_pids(pid);
        run(Command::new("kill").args(["-s", "KILL", &pid.to_string()]))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // A new postmaster refuses to start while an old backend still holds the shared memory.
        while is_alive(pid) || children.iter().any(|&c| is_alive(c)) {
            if std::time::Instant::now() > deadline {
                return Err(Error::Startup {
                    data_dir: self.data.clone(),
                    log_tail: format!("processes of the killed server {pid} still alive"),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // A zombie postmaster (nobody reaps it here) would pass the new server's `kill(pid, 0)`
        // check and look alive; it is dead and its children are gone, so its lock files (the
        // data directory's and the Unix socket's) are stale.
        let _ = fs::remove_file(self.data.join("postmaster.pid"));
        let socket = format!(".s.PGSQL.{}", self.port);
        let _ = fs::remove_file(self.base.join(format!("{socket}.lock")));
        let _ = fs::remove_file(self.base.join(socket));
        *running = false;
        Ok(())
    }

    // ----- setup steps -----

    /// Fills the data directory: a copy of this machine's cached `initdb` output when there is
    /// one, else a real `initdb` whose output then becomes the cache.
    ///
    /// `initdb` costs seconds (much more on a loaded machine) and every test process, doctest
    /// and dedicated server needs a cluster; a copy costs a fraction of that. The cache is keyed
    /// by server version and user, and only ever appears complete (built inside our own
    /// directory, then renamed into place), so a crash cannot leave a half-made template.
    fn initdb(&self) -> Result<(), Error> {
        let template = self.template_dir();
        if let Some(template) = &template {
            if template.join("data/global/pg_control").exists() {
                let mut cp = self.runner.command(Path::new("cp"));
                cp.arg("-a").arg(template.join("data")).arg(&self.data);
                self.prepare(&mut cp);
                if run(&mut cp).is_ok() {
                    return Ok(());
                }
                // A broken cache must not break the tests: start over with a real initdb.
                let _ = fs::remove_dir_all(&self.data);
            }
        }

        let mut cmd = self.runner.command(&self.bins.initdb);
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            // No fsync while creating files: the cluster is thrown away anyway, and this is
            // most of initdb's time on a slow disk.
            .arg("--no-sync");
        self.prepare(&mut cmd);
        run(&mut cmd)?;

        if let Some(template) = template {
            // Publishing is best effort: without a cache the next cluster just runs initdb.
            let staging = self.base.join("template");
            let mut cp = self.runner.command(Path::new("cp"));
            cp.arg("-a").arg(&self.data).arg(staging.join("data"));
            self.prepare(&mut cp);
            let staged = fs::create_dir(&staging)
                .and_then(|()| self.runner.chown(&staging))
                .is_ok()
                && run(&mut cp).is_ok();
            // Renaming onto an existing (non-empty) template fails: another process was first.
            if !(staged && fs::rename(&staging, &template).is_ok()) {
                let _ = fs::remove_dir_all(&staging);
            }
        }
        Ok(())
    }

    /// Where this machine's cached `initdb` output for this server version and user lives, or
    /// `None` when the version cannot be read or `APP_METRICS_PG_NO_TEMPLATE` is set.
    fn template_dir(&self) -> Option<PathBuf> {
        if env::var_os("APP_METRICS_PG_NO_TEMPLATE").is_some_and(|v| !v.is_empty() && v != "0") {
            return None;
        }
        let out = Command::new(&self.bins.initdb)
            .arg("--version")
            .output()
            .ok()?;
        let version: String = String::from_utf8_lossy(&out.stdout)
            .trim()
            .rsplit(' ')
            .next()?
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        if !out.status.success() || version.is_empty() {
            return None;
        }
        // `v1`: the initdb arguments above; bump it when they change.
        let name = format!(
            "app-metrics-pg-template-v1-{version}-u{}",
            self.runner.uid()
        );
        Some(self.base.parent()?.join(name))
    }

    fn write_settings(&self, options: &ClusterOptions) -> Result<(), Error> {
        let onoff = |b: bool| if b { "on" } else { "off" };
        let mut conf = format!(
            "\n# ----- app-metrics test harness -----\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = {}\n\
             fsync = {}\n",
            self.base.display(),
            options.max_connections,
            onoff(options.fsync),
        );
        if !options.fsync {
            // Without fsync these cost time and buy nothing.
            conf.push_str("synchronous_commit = off\nfull_page_writes = off\n");
        }
        for (name, value) in &options.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        self.append_conf(&conf)
    }

    fn start_on_free_port(&mut self) -> Result<(), Error> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            // The last `port` line of postgresql.conf wins, so a retry just appends another.
            self.append_conf(&format!("port = {port}\n"))?;
            let log_start = fs::metadata(&self.log).map_or(0, |m| m.len());
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.port = port;
                    *self
                        .running
                        .get_mut()
                        .unwrap_or_else(PoisonError::into_inner) = true;
                    return Ok(());
                }
                Err(err) => {
                    let log = read_from(&self.log, log_start);
                    if !(log.contains("could not bind") || log.contains("already in use")) {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.expect("PORT_ATTEMPTS > 0"))
    }

    fn spawn_watchdog(&self, pid: u32) -> Result<Child, Error> {
        // Polls the owner once a second; once it is gone, stops the server and removes the
        // directory. A zombie counts as gone: in a container whose init does not reap orphans,
        // a dead owner may stay a zombie for ever, and `kill -0` would still succeed. It ignores
        // SIGINT/SIGHUP and sits in its own process group, so a Ctrl-C that ends the tests does
        // not end it before it has cleaned up.
        const SCRIPT: &str = r#"trap '' INT HUP
pid=$1; dir=$2; shift 2
alive() {
  [ -r "/proc/$1/stat" ] || { kill -0 "$1" 2>/dev/null; return; }
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
while alive "$pid"; do sleep 1; done
if [ -f "$dir/data/postmaster.pid" ]; then "$@" >/dev/null 2>&1; fi
rm -rf "$dir""#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("app-metrics-pg-watchdog")
            .arg(pid.to_string())
            .arg(&self.base)
            .args(self.runner.prefix())
            .arg(&self.bins.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECS, "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        self.prepare(&mut cmd);
        cmd.spawn()
            .map_err(|e| Error::io("spawning the cleanup watchdog (sh)", e))
    }

    // ----- helpers -----

    fn pg_ctl_start(&self) -> Result<(), Error> {
        let log_start = fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut cmd = self.runner.command(&self.bins.pg_ctl);
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "start"]);
        self.prepare(&mut cmd);
        match run(&mut cmd) {
            Ok(_) => Ok(()),
            Err(err) => Err(Error::Startup {
                data_dir: self.data.clone(),
                log_tail: format!(
                    "{err}; server log:\n{}",
                    tail(&read_from(&self.log, log_start), 20)
                ),
            }),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, Error> {
        let mut cmd = self.runner.command(&self.bins.pg_ctl);
        cmd.arg("-D").arg(&self.data).args(args);
        self.prepare(&mut cmd);
        run(&mut cmd)
    }

    /// Settings shared by every child process: a working directory the server user can enter,
    /// and no `PG*` variables pointing elsewhere.
    fn prepare(&self, cmd: &mut Command) {
        cmd.current_dir(&self.base);
        for var in PG_ENV {
            cmd.env_remove(var);
        }
    }

    fn append_conf(&self, text: &str) -> Result<(), Error> {
        let path = self.data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: nothing useful can be done with an error while dropping, and the
        // watchdog retries the same once the process exits.
        if self.data.join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECS, "stop"]);
        }
        let _ = fs::remove_dir_all(&self.base);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

// ===== binaries =====

#[derive(Debug, Clone)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self, Error> {
        let at = |dir: &Path| Self {
            initdb: dir.join("initdb"),
            pg_ctl: dir.join("pg_ctl"),
        };
        let usable = |b: &Self| is_executable(&b.initdb) && is_executable(&b.pg_ctl);
        // An explicit choice is honoured strictly: falling back to another version would hide
        // a typo and test against the wrong server.
        if let Some(dir) = env::var_os("APP_METRICS_PG_BIN").filter(|d| !d.is_empty()) {
            let bins = at(Path::new(&dir));
            return if usable(&bins) {
                Ok(bins)
            } else {
                Err(Error::BinariesNotFound {
                    searched: format!("APP_METRICS_PG_BIN={}", Path::new(&dir).display()),
                })
            };
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(path) = env::var_os("PATH") {
            dirs.extend(env::split_paths(&path));
        }
        // Debian and Ubuntu keep the server binaries off PATH, one directory per major version.
        dirs.extend(debian_bin_dirs());
        dirs.push("/usr/local/pgsql/bin".into());
        dirs.iter()
            .map(|dir| at(dir))
            .find(usable)
            .ok_or_else(|| Error::BinariesNotFound {
                searched: "$PATH, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin".to_owned(),
            })
    }
}

/// `/usr/lib/postgresql/<major>/bin`, newest major version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Looks `name` up on `PATH` and in the sbin directories, which a root shell has on `PATH` but
/// a minimal CI environment may not.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

// ===== running as another user =====

/// How server commands are run: directly, or (as root) as an unprivileged user.
#[derive(Debug, Clone)]
enum Runner {
    Direct,
    As {
        uid: u32,
        gid: u32,
        /// The command prefix that switches user, e.g. `runuser -u postgres --`.
        prefix: Vec<OsString>,
    },
}

impl Runner {
    fn for_current_user() -> Result<Self, Error> {
        if effective_uid()? != 0 {
            return Ok(Self::Direct);
        }
        let user = match env::var("APP_METRICS_PG_USER") {
            Ok(user) if !user.is_empty() => user,
            _ if user_id(SUPERUSER, "-u").is_some() => SUPERUSER.to_owned(),
            _ => {
                create_system_user(FALLBACK_USER)?;
                FALLBACK_USER.to_owned()
            }
        };
        let (Some(uid), Some(gid)) = (user_id(&user, "-u"), user_id(&user, "-g")) else {
            return Err(Error::NoUser(format!("`id {user}` found no such user")));
        };
        let prefix = if let Some(runuser) = find_program("runuser") {
            vec![runuser.into(), "-u".into(), user.into(), "--".into()]
        } else if let Some(setpriv) = find_program("setpriv") {
            vec![
                setpriv.into(),
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--init-groups".into(),
            ]
        } else {
            return Err(Error::NoUser(
                "neither runuser nor setpriv found (Debian: apt-get install -y util-linux)".into(),
            ));
        };
        Ok(Self::As { uid, gid, prefix })
    }

    /// The uid the server runs as.
    fn uid(&self) -> u32 {
        match self {
            Self::Direct => effective_uid().unwrap_or(0),
            Self::As { uid, .. } => *uid,
        }
    }

    /// Hands `path` to the server user (nothing to do when we are that user).
    fn chown(&self, path: &Path) -> io::Result<()> {
        match self {
            Self::Direct => Ok(()),
            Self::As { uid, gid, .. } => std::os::unix::fs::chown(path, Some(*uid), Some(*gid)),
        }
    }

    fn prefix(&self) -> &[OsString] {
        match self {
            Self::Direct => &[],
            Self::As { prefix, .. } => prefix,
        }
    }

    fn command(&self, program: &Path) -> Command {
        match self.prefix().split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
        }
    }
}

/// The effective uid, from `/proc/self/status` (no libc: the workspace forbids `unsafe`).
fn effective_uid() -> Result<u32, Error> {
    let status = fs::read_to_string("/proc/self/status");
    if let Some(euid) = status.as_deref().ok().and_then(|s| {
        s.lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok())
    }) {
        return Ok(euid);
    }
    let out = run(Command::new("id").arg("-u"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::NoUser("cannot tell whether we run as root (`id -u`)".into()))
}

/// `id <flag> <user>`: the user's uid (`-u`) or primary gid (`-g`), if the user exists.
fn user_id(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn create_system_user(user: &str) -> Result<(), Error> {
    let useradd = find_program("useradd").ok_or_else(|| {
        Error::NoUser(format!(
            "no `postgres` user, and no useradd to create `{user}`; \
             set APP_METRICS_PG_USER to an existing unprivileged user"
        ))
    })?;
    let mut cmd = Command::new(useradd);
    cmd.args(["--system", "--user-group", "--no-create-home"])
        .args([
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ]);
    let out = cmd.output().map_err(|e| Error::io("running useradd", e))?;
    // Exit code 9: the user exists, because another test process created it just now.
    if out.status.success() || out.status.code() == Some(9) {
        Ok(())
    } else {
        Err(Error::NoUser(format!(
            "useradd {user} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

// ===== small helpers =====

/// Creates `<tmp>/app-metrics-pg-<pid>-<n>`, private, owned by the server user.
fn make_base_dir(runner: &Runner) -> Result<PathBuf, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let parent = env::var_os("APP_METRICS_PG_TMPDIR").map_or_else(env::temp_dir, PathBuf::from);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("app-metrics-pg-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let setup = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .and_then(|()| runner.chown(&dir));
                return match setup {
                    Ok(()) => Ok(dir),
                    Err(e) => {
                        let _ = fs::remove_dir_all(&dir);
                        Err(Error::io(format!("preparing {}", dir.display()), e))
                    }
                };
            }
            // A leftover of an earlier process with the same pid; take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
    }
}

/// Whether `pid` runs (a zombie counts as gone: it has exited, only nobody reaped it).
fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// The processes whose parent is `pid` (from `/proc/*/status`).
fn child_pids(pid: u32) -> Vec<u32> {
    let parent = format!("PPid:\t{pid}");
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fs::read_to_string(format!("/proc/{child}/status"))
                .is_ok_and(|s| s.lines().any(|l| l == parent))
        })
        .collect()
}

/// A port that was free a moment ago on 127.0.0.1 (bind to port 0, read it, release it).
fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))
}

/// Runs `cmd` to completion, turning a non-zero exit into [`Error::Command`] with its output.
fn run(cmd: &mut Command) -> Result<Output, Error> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {shown}"), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Err(Error::Command {
            command: shown,
            status: out.status,
            output: tail(&text, 30),
        })
    }
}

/// The file's contents from byte `offset` on (empty if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_string(&mut text);
        }
    }
    text
}

/// The last `n` lines of `text`, trimmed.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn runner_prefixes_the_program() {
        let runner = Runner::As {
            uid: 1,
            gid: 1,
            prefix: vec!["runuser".into(), "-u".into(), "pg".into(), "--".into()],
        };
        let cmd = runner.command(Path::new("/bin/initdb"));
        assert_eq!(cmd.get_program(), "runuser");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-u", "pg", "--", "/bin/initdb"]);
        assert_eq!(
            Runner::Direct.command(Path::new("/bin/x")).get_program(),
            "/bin/x"
        );
    }

    #[test]
    fn our_own_process_is_alive_and_a_child_is_found() {
        assert!(is_alive(std::process::id()));
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        assert!(child_pids(std::process::id()).contains(&child.id()));
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(!is_alive(child.id()));
    }

    #[test]
    fn effective_uid_matches_id() {
        let out = Command::new("id").arg("-u").output().expect("id runs");
        let expected: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(effective_uid().expect("readable"), expected);
    }
}
