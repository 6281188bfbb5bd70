//! The one way the system tests start the real `tally` binary: free 127.0.0.1 ports, the
//! command, a wait for `/readyz` that notices a process that exited instead, and a guard that
//! SIGKILLs and reaps the process however the test ends (and, when the test is failing, prints
//! the tail of the process's log file, if it has one, so the failure explains itself).
//!
//! Each test binary uses part of this kit, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http;

/// Lines of a process's log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// How often readiness and exit are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

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

/// The `tally` binary under test, with no standard input.
pub(crate) fn tally() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.stdin(Stdio::null());
    command
}

/// A running `tally`; SIGKILLed and reaped when dropped.
pub(crate) struct Process {
    child: Option<Child>,
    /// What failure messages call it.
    name: String,
    /// Where its standard output and error go, if to a file.
    log: Option<PathBuf>,
}

impl Process {
    /// Starts `command` with its standard output and error appended to `log`.
    pub(crate) fn spawn_logged(command: &mut Command, name: &str, log: PathBuf) -> Process {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("cannot open the node's log file");
        command
            .stdout(file.try_clone().expect("cannot share the log file"))
            .stderr(file);
        let mut process = Process::spawn(command, name);
        process.log = Some(log);
        process
    }

    /// Starts `command` with the output it was given.
    pub(crate) fn spawn(command: &mut Command, name: &str) -> Process {
        let child = command.spawn().expect("cannot start the tally binary");
        Process {
            child: Some(child),
            name: name.to_owned(),
            log: None,
        }
    }

    /// The process, while it has not been killed or seen to exit.
    pub(crate) fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the node is not running")
    }

    /// Its process ID.
    pub(crate) fn id(&self) -> u32 {
        self.child.as_ref().expect("the node is not running").id()
    }

    /// SIGKILLs the process (no shutdown path runs) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (the orderly stop an orchestrator sends).
    pub(crate) fn terminate(&mut self) {
        let pid = self.id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit by itself, or panics at `deadline`.
    pub(crate) fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in time",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How it exited, if it has (it is then no longer this guard's to kill).
    fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("cannot wait for the node")?;
        self.child = None;
        Some(status)
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Waits until `/readyz` on `address` answers 200 (Ok), or the process exits first (its exit
    /// status); panics at `deadline` naming the process and its last answer.
    pub(crate) fn wait_ready(
        &mut self,
        address: SocketAddr,
        deadline: Instant,
    ) -> Result<(), ExitStatus> {
        loop {
            let ready = http::request_once(address, "GET", "/readyz", "");
            if ready.as_ref().is_ok_and(|(status, _)| *status == 200) {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready in time (last /readyz: {ready:?}){}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// [`Self::wait_ready`], panicking if the process exits first.
    pub(crate) fn expect_ready(&mut self, address: SocketAddr, deadline: Instant) {
        if let Err(status) = self.wait_ready(address, deadline) {
            panic!(
                "{} exited ({status}) before becoming ready{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Its log so far (empty without a log file).
    pub(crate) fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// The last lines of its log, headed by where the whole log is (empty without a log file).
    pub(crate) fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "\n---- last {} lines of {}'s log ({}) ----\n{}",
            tail.len(),
            self.name,
            path.display(),
            tail.join("\n")
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && self.log.is_some() {
            eprintln!("{}", self.log_tail());
        }
    }
}
