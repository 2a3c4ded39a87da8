//! A PostgreSQL server of a test's own: `initdb` in a temporary directory,
//! `postgres` on a free loopback port, stopped and removed when dropped, so
//! that nothing depends on a service left running and parallel runs never
//! collide.
//!
//! The binaries are looked up on `PATH`, then in `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package). `initdb` refuses to run as root, so
//! under root both run as `nobody` through `setpriv`, in a directory given
//! to `nobody`. Without the binaries [`TempPostgres::start`] returns `None`
//! after saying the test is skipped, unless `CONFAB_REQUIRE_CLUSTER=1`
//! (set by `.ci/run`), which makes it a failure.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{TempDir, free_port};

/// `nobody`'s user and group ids on Debian.
const NOBODY: u32 = 65534;

/// A running PostgreSQL server with a database user `confab` (trust
/// authentication, loopback only).
#[derive(Debug)]
pub struct TempPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `-c name=value` settings given at every start.
    settings: Vec<String>,
    child: Option<Child>,
    as_nobody: bool,
    /// Removed after the server stopped (fields drop in order).
    dir: TempDir,
}

impl TempPostgres {
    /// Makes a cluster and starts it, or `None` (skipped) without PostgreSQL.
    ///
    /// # Panics
    /// PostgreSQL is missing and `CONFAB_REQUIRE_CLUSTER=1`, or it is there
    /// and does not start.
    #[must_use]
    pub fn start(test: &str) -> Option<TempPostgres> {
        TempPostgres::start_with(test, &[])
    }

    /// [`start`](Self::start) with server settings (`"fsync=off"`, ...).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with(test: &str, settings: &[&str]) -> Option<TempPostgres> {
        let Some(bin) = find_bin() else {
            let why = "PostgreSQL's initdb and postgres are not installed (Debian: apt-get install postgresql)";
            assert!(std::env::var("CONFAB_REQUIRE_CLUSTER").as_deref() != Ok("1"), "{test}: {why}");
            eprintln!("SKIPPED {test}: {why}; CONFAB_REQUIRE_CLUSTER=1 makes this a failure");
            return None;
        };
        let dir = TempDir::new(&format!("pg-{test}"));
        let as_nobody = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        if as_nobody {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("give the directory to nobody");
        }
        let data = dir.path().join("data");
        let settings = settings.iter().map(|s| (*s).to_owned()).collect();
        let mut pg = TempPostgres { bin, data, port: free_port(), settings, child: None, as_nobody, dir };
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&pg.data).args(["-U", "confab", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        let out = initdb.output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.launch();
        Some(pg)
    }

    /// The URL a client connects with.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://confab@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (SIGQUIT: no shutdown checkpoint, as a
    /// crash) and starts it again on the same port and data: every
    /// connection is cut.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Stops the server (immediate shutdown), if it runs.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-QUIT").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log (its stderr).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        let log = File::options().create(true).append(true).open(self.dir.path().join("postgres.log")).expect("log");
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&self.data).arg("-p").arg(self.port.to_string()).arg("-k").arg(self.dir.path());
        cmd.args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=50", "-c", "shared_buffers=16MB"]);
        for setting in &self.settings {
            cmd.arg("-c").arg(setting);
        }
        let child = cmd.stdout(Stdio::null()).stderr(log).stdin(Stdio::null()).spawn().expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "confab"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start within 30 s; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program` from PostgreSQL's directory, as `nobody` under root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_nobody {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={NOBODY}")).arg(format!("--regid={NOBODY}")).arg("--clear-groups").arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb`, `postgres` and `pg_isready`.
fn find_bin() -> Option<PathBuf> {
    let has_all = |dir: &Path| ["initdb", "postgres", "pg_isready"].iter().all(|b| dir.join(b).is_file());
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    candidates.extend(versions.into_iter().rev());
    candidates.into_iter().find(|dir| has_all(dir)).map(|dir| {
        // A symlink on PATH (/usr/local/bin/initdb) stands for the real directory.
        std::fs::canonicalize(dir.join("initdb")).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or(dir)
    })
}
