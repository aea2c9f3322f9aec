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
