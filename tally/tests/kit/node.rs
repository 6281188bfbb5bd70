//! Real `tally run` processes for cluster tests: a TOML config written into a temporary
//! directory, the binary started on it with its log in a file (by the kit's `process.rs`, which
//! waits for `/readyz` and SIGKILLs the process however the test ends).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Instant;

use super::process::{Process, tally};

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
        let mut command = tally();
        command
            .arg("run")
            .arg("--config")
            .arg(self.config_file())
            .env("RUST_LOG", "warn,tally_node=info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied());
        let name = format!("node {}", self.name);
        NodeProcess {
            process: Process::spawn_logged(&mut command, &name, self.log_file()),
            spec: self.clone(),
        }
    }
}

/// A running `tally run`; SIGKILLed when dropped.
pub(crate) struct NodeProcess {
    process: Process,
    /// What it was started with.
    pub(crate) spec: NodeSpec,
}

#[allow(dead_code)] // each test binary uses part of it
impl NodeProcess {
    /// The process's ID, while it runs (for signals such as SIGSTOP).
    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }

    /// SIGKILLs the process (no shutdown path runs) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM (the orderly stop an orchestrator sends).
    pub(crate) fn terminate(&mut self) {
        self.process.terminate();
    }

    /// Waits for the process to exit by itself, or panics at `deadline`.
    pub(crate) fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        self.process.wait_exit(deadline)
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Waits until `/readyz` answers 200, or panics at `deadline` naming the node.
    pub(crate) fn wait_ready(&mut self, deadline: Instant) {
        self.process.expect_ready(self.spec.http, deadline);
    }

    /// The node's log so far.
    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}
