//! Running the real `kassa` binary as a server process in tests.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server and what it printed before "listening on".
pub struct ServerProcess {
    pub child: Child,
    pub base_url: String,
    pub printed: String,
    stderr: Option<std::sync::mpsc::Receiver<String>>,
}

impl ServerProcess {
    /// Starts `cmd` and waits for its "listening on URL" line.
    pub fn start(mut cmd: Command) -> ServerProcess {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start kassa");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let base_url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.to_string();
                    }
                    printed.push(line);
                }
                _ => {
                    let _ = child.kill();
                    let mut err = String::new();
                    child.stderr.take().unwrap().read_to_string(&mut err).ok();
                    panic!("server exited before listening; stdout {printed:?}; stderr {err}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            let _ = tx.send(all);
        });
        ServerProcess { child, base_url, printed: printed.join("\n"), stderr: Some(rx) }
    }

    /// Sends SIGTERM and waits up to 30 s (a loaded machine may be slow to stop a node);
    /// returns the exit code and stderr.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the process to end by itself (e.g. an injected crash).
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = self.stderr.take().and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok()).unwrap_or_default();
                return (status.code(), err);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("server did not stop within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file for the real `kassa` binary over a test database and a node
/// (chain `N::CHAIN`, currency `N::CURRENCY` with `currency` as its further keys), plus
/// `extra` TOML tables.
pub struct ServerSetup {
    pub config: std::path::PathBuf,
    /// The `kassa` binary (`env!("CARGO_BIN_EXE_kassa")` in its tests).
    bin: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerSetup {
    pub fn new<N: crate::node::TestNode>(bin: &str, db: &crate::TestDb, node: &N, extra: &str, currency: &str) -> ServerSetup {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("kassa.toml");
        std::fs::write(
            &config,
            format!(
                r#"database_url = {db:?}
listen = "127.0.0.1:0"
log_format = "json"
{extra}
{chains}
[currencies.{code}]
name = {code:?}
kind = "crypto"
chain = {chain:?}
{currency}
"#,
                db = db.url,
                chains = node.config_toml(),
                code = N::CURRENCY,
                chain = N::CHAIN,
            ),
        )
        .unwrap();
        ServerSetup { config, bin: bin.into(), _dir: dir }
    }

    /// `kassa --config … ARGS` with the test master key (and no crash switch).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).args(args).env("KASSA_MASTER_KEY", crate::TEST_MASTER_KEY).env_remove("KASSATEST_CRASH_AT");
        cmd
    }

    /// Runs an admin command with `--json` in ARGS; panics unless it succeeds.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.command(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `kassa serve`, aborting at `crash_at` (`KASSATEST_CRASH_AT`) when given.
    pub fn serve(&self, crash_at: Option<&str>) -> ServerProcess {
        let mut cmd = self.command(&["serve"]);
        if let Some(point) = crash_at {
            cmd.env("KASSATEST_CRASH_AT", point);
        }
        ServerProcess::start(cmd)
    }
}
