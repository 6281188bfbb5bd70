//! Real `tally run` processes for cluster tests: a TOML config written into a temporary
//! directory, the binary started on it with its log in a file, a wait for `/readyz`, and a
//! Drop guard that SIGKILLs the process however the test ends (and, when the test is failing,
//! prints the tail of the node's log so the failure explains itself).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;

/// Lines of a node's log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A free TCP port on 127.0.0.1 (bound once, then released for the node to take).
pub(crate) fn free_tcp_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free TCP port on 127.0.0.1")
}

/// A free UDP port on 127.0.0.1 (bound once, then released for the node to take).
pub(crate) fn free_udp_address() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("no free UDP port on 127.0.0.1")
}

/// Everything one node's config file says.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    /// Its node ID (its certificate names it).
    pub(crate) name: String,
    /// Its HTTP address.
    pub(crate) http: SocketAddr,
    /// Its QUIC peer address.
    pub(crate) peer_listen: SocketAddr,
    /// Its peer list: (node ID, address to dial it at).
    pub(crate) peers: Vec<(String, SocketAddr)>,
    /// Its directory: config, log and data live under it.
    pub(crate) dir: PathBuf,
    /// The cluster CA certificate.
    pub(crate) ca: PathBuf,
    /// Its certificate.
    pub(crate) cert: PathBuf,
    /// Its key.
    pub(crate) key: PathBuf,
    /// Further top-level TOML settings, verbatim.
    pub(crate) extra: String,
}

impl NodeSpec {
    /// The data directory (kept across restarts).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the node's log goes (appended across restarts).
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("tally.toml")
    }

    fn config_text(&self) -> String {
        let path = |p: &Path| format!("{:?}", p.display().to_string());
        let mut text = format!(
            "node_id = {:?}\nlisten = \"{}\"\npeer_listen = \"{}\"\ndata_dir = {}\n{}\n",
            self.name,
            self.http,
            self.peer_listen,
            path(&self.data_dir()),
            self.extra
        );
        text += &format!(
            "[tls]\nca = {}\ncert = {}\nkey = {}\n",
            path(&self.ca),
            path(&self.cert),
            path(&self.key)
        );
        for (id, address) in &self.peers {
            text += &format!("\n[[peers]]\nid = {id:?}\naddress = \"{address}\"\n");
        }
        text
    }

    /// Writes the config and starts `tally run` on it; does not wait for readiness.
    pub(crate) fn spawn(&self) -> NodeProcess {
        self.spawn_with_env(&[])
    }

    /// As [`Self::spawn`], with further environment variables (e.g. libfaketime's).
    pub(crate) fn spawn_with_env(&self, env: &[(&str, &str)]) -> NodeProcess {
        std::fs::create_dir_all(&self.dir).expect("cannot create the node's directory");
        std::fs::write(self.config_file(), self.config_text()).expect("cannot write the config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("cannot open the node's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("run")
            .arg("--config")
            .arg(self.config_file())
            .env("RUST_LOG", "warn,tally_node=info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start the tally binary");
        NodeProcess {
            child: Some(child),
            spec: self.clone(),
        }
    }
}

/// A running `tally run`; SIGKILLed when dropped.
pub(crate) struct NodeProcess {
    child: Option<Child>,
    /// What it was started with.
    pub(crate) spec: NodeSpec,
}

impl NodeProcess {
    /// The process's ID, while it runs (for signals such as SIGSTOP).
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// SIGKILLs the process (no shutdown path runs) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (the orderly stop an orchestrator sends). Only operations.rs uses it.
    #[allow(dead_code)]
    pub(crate) fn terminate(&mut self) {
        let pid = self.child.as_ref().expect("the node is not running").id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit by itself, or panics at `deadline`. Only operations.rs
    /// uses it.
    #[allow(dead_code)]
    pub(crate) fn wait_exit(&mut self, deadline: Instant) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the node is not running");
        loop {
            if let Some(status) = child.try_wait().expect("cannot wait for the node") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit in time",
                self.spec.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits until `/readyz` answers 200, or panics at `deadline` naming the node.
    pub(crate) fn wait_ready(&mut self, deadline: Instant) {
        loop {
            let ready = http::request_once(self.spec.http, "GET", "/readyz", "");
            if ready.as_ref().is_ok_and(|(status, _)| *status == 200) {
                return;
            }
            assert!(
                self.is_running(),
                "node {} exited before becoming ready; its log is {}",
                self.spec.name,
                self.spec.log_file().display()
            );
            assert!(
                Instant::now() < deadline,
                "node {} did not become ready in time (last /readyz: {ready:?})",
                self.spec.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.spec.log_file()).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "---- last {} lines of node {}'s log ----\n{}",
                tail.len(),
                self.spec.name,
                tail.join("\n")
            );
        }
    }
}
