//! A throwaway PostgreSQL server for the tests, started from the installed binaries (Debian keeps them in
//! /usr/lib/postgresql/*/bin): initdb runs once per build into a template under target/tmp, and each test copies
//! it and starts its own server on a free loopback port, fsync off, stopped when the test ends. PostgreSQL refuses
//! to run as root, so under root the server runs as `nobody`.
//!
//! `DLR_POLLER_TEST_PG_URL` (a superuser URL) uses that server instead: each test gets a database of its own.
//! Without either, PostgreSQL tests are skipped with a line on stderr saying so, unless
//! `DLR_POLLER_TEST_POSTGRES=required` (as in CI), which makes a missing server a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The password of the test servers' superuser (scram): every connection of the binary reads it from
/// `--db-password-file`.
pub const PASSWORD: &str = "pg-test-secret-7d41";

/// One database on a PostgreSQL server the test may use.
pub struct PgDb {
    pub server: Option<Server>,
    /// The URL without the password, and the password.
    pub url: String,
    pub password: String,
    /// For an external server: the admin URL and the database to drop at the end.
    external: Option<(String, String)>,
    /// The test's own connection, made once (a SCRAM login costs time in a debug build).
    client: std::cell::RefCell<Option<postgres::Client>>,
}

/// A server this test started.
pub struct Server {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
}

/// Says on stderr (past the test harness's capture) that a test was skipped, and why.
pub fn skip(test: &str, why: &str) {
    // One write, so that the line stays whole among the test harness's own output.
    let _ = std::io::stderr().write_all(format!("\nskipped: {test}: {why}\n").as_bytes());
}

/// The directory of the newest installed PostgreSQL's binaries.
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL command, as `nobody` when the tests run as root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Gives `path` (recursively) to the user the server runs as.
pub fn chown_to_server_user(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {} failed", path.display());
    }
}

/// The initdb'd data directory all test servers copy (made once per build; a lock file keeps parallel test
/// binaries from making it twice).
fn template(bin: &Path) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg-template");
    let data = root.join("data");
    if data.join("PG_VERSION").exists() && root.join("ready").exists() {
        return data;
    }
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join("lock")).unwrap();
    lock.lock().unwrap();
    if !root.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&data);
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown_to_server_user(&root);
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(root.join("ready"), "").unwrap();
    }
    data
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// Whether PostgreSQL tests can run here; says why not on stderr, or fails when they are required.
pub fn available(test: &str) -> bool {
    if std::env::var_os("DLR_POLLER_TEST_PG_URL").is_some() || pg_bin().is_some() {
        return true;
    }
    if std::env::var("DLR_POLLER_TEST_POSTGRES").as_deref() == Ok("required") {
        panic!(
            "DLR_POLLER_TEST_POSTGRES=required, but no PostgreSQL is installed (no \
             /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
        );
    }
    skip(
        test,
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql, or set \
         DLR_POLLER_TEST_PG_URL)",
    );
    false
}

impl PgDb {
    /// A fresh, empty database; `None` (with the reason on stderr) when no PostgreSQL is available and it is not
    /// required.
    pub fn new(test: &str) -> Option<PgDb> {
        if let Ok(admin) = std::env::var("DLR_POLLER_TEST_PG_URL") {
            return Some(PgDb::external(&admin, test));
        }
        if !available(test) {
            return None;
        }
        let bin = pg_bin()?;
        Some(PgDb::on(Server::start(&bin, None)))
    }

    /// The `postgres` database of a server this test started.
    pub fn on(server: Server) -> PgDb {
        PgDb {
            url: format!("postgres://postgres@127.0.0.1:{}/postgres", server.port),
            password: PASSWORD.into(),
            server: Some(server),
            external: None,
            client: Default::default(),
        }
    }

    fn external(admin: &str, test: &str) -> PgDb {
        let name = format!(
            "dlr_test_{}_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed),
            test.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(20)
                .collect::<String>()
                .to_lowercase()
        );
        let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let config: postgres::Config = admin.parse().unwrap();
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let (base, _) = admin.rsplit_once('/').unwrap();
        let base = match (base.find("://"), base.rfind('@')) {
            (Some(s), Some(at)) => {
                let user = base[s + 3..at].split(':').next().unwrap_or_default();
                format!("{}{user}@{}", &base[..s + 3], &base[at + 1..])
            }
            _ => base.to_string(),
        };
        PgDb {
            server: None,
            url: format!("{base}/{name}"),
            password,
            external: Some((admin.to_string(), name)),
            client: Default::default(),
        }
    }

    /// A new connection of the test's own.
    pub fn connect(&self) -> postgres::Client {
        let mut config: postgres::Config = self.url.parse().unwrap();
        config.password(&self.password);
        config.connect(postgres::NoTls).unwrap()
    }

    /// Drops the test's connection (the next `client()` makes a new one).
    pub fn reset(&self) {
        self.client.borrow_mut().take();
    }

    /// The test's connection for setting up and checking (made again if the server went away).
    pub fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(self.connect());
        }
        std::cell::RefMut::map(slot, |c| c.as_mut().unwrap())
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.external
            && let Ok(mut client) = postgres::Client::connect(admin, postgres::NoTls)
        {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

impl Server {
    /// Copies the template and starts a server on a free port. `conf` lines are appended to postgresql.conf.
    pub fn start(bin: &Path, conf: Option<&str>) -> Server {
        let template = template(bin);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "copying the PostgreSQL template failed");
        if let Some(conf) = conf {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(f, "{conf}").unwrap();
        }
        chown_to_server_user(dir.path());
        let mut server = Server {
            dir,
            port: 0,
            bin: bin.to_path_buf(),
        };
        for attempt in 0.. {
            server.port = free_port();
            if server.pg_ctl_start() {
                break;
            }
            assert!(attempt < 3, "PostgreSQL did not start: {}", server.log());
        }
        server
    }

    fn pg_ctl_start(&self) -> bool {
        as_server_user(&self.bin.join("pg_ctl"))
            .arg("start")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-w", "-t", "30", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
                 -c full_page_writes=off -c max_connections=200",
                self.port,
                self.dir.path().display()
            ))
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Stops the server (fast: connections are closed at once).
    pub fn stop(&self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "30"])
            .output();
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        while !self.pg_ctl_start() {
            assert!(
                Instant::now() < until,
                "PostgreSQL did not restart: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
