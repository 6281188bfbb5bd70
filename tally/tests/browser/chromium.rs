//! Headless Chromium driven over the Chrome DevTools Protocol (CDP) through a pipe
//! (`--remote-debugging-pipe`): JSON messages ended by a NUL byte, commands written to the
//! browser's fd 3 and answers and events read from its fd 4. No WebSocket and no extra crates:
//! a shell maps our stdin/stdout pipes to fds 3 and 4 before it execs the browser.
//!
//! Every call waits a bounded time. Dropping a [`Chromium`] closes the browser and then kills its
//! whole process group (renderers, zygote), even when the test is failing.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian's `chromium` package installs the browser; `TALLY_CHROMIUM` overrides it.
const CHROMIUM_DEFAULT: &str = "/usr/bin/chromium";
/// The first answer, while the browser starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Any later answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a closing browser gets before its process group is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// A headless Chromium with one CDP connection.
pub(crate) struct Chromium {
    child: Child,
    commands: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    log: PathBuf,
    /// Requests failed because they matched a [`Chromium::block_requests`] pattern.
    blocked_requests: Vec<String>,
    /// Uncaught exceptions of page scripts.
    exceptions: Vec<String>,
}

impl Chromium {
    /// Starts the browser with its profile and log under `scratch`. Panics, with how to install
    /// it, when Chromium is missing: the browser test must fail, never skip, on such a machine.
    pub(crate) fn launch(scratch: &Path) -> Chromium {
        let binary = std::env::var_os("TALLY_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CHROMIUM_DEFAULT));
        assert!(
            binary.is_file(),
            "headless Chromium is missing: {} does not exist. The dashboard's browser test \
             needs Debian's `chromium` package: `apt-get install -y chromium` (scripts/test.sh \
             installs it when run as root), or set TALLY_CHROMIUM to a Chromium binary.",
            binary.display()
        );
        let profile = scratch.join("chromium-profile");
        let log = scratch.join("chromium.log");
        let log_file = File::create(&log).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            // fd 3 = our commands, fd 4 = its answers; its own output goes to the log.
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group, so Drop can end every process the browser started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let commands = child.stdin.take().unwrap();
        let answers = child.stdout.take().unwrap();
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if sender.send(value).is_err() {
                    return;
                }
            }
        });
        let mut browser = Chromium {
            child,
            commands,
            messages,
            next_id: 0,
            log,
            blocked_requests: Vec::new(),
            exceptions: Vec::new(),
        };
        browser.call_within(None, "Browser.getVersion", json!({}), STARTUP_TIMEOUT);
        browser
    }

    /// Opens a blank tab of `width`×`height` CSS pixels; returns its session ID.
    pub(crate) fn open_tab(&mut self, width: u32, height: u32) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        self.call(Some(&session), "Runtime.enable", json!({}));
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        session
    }

    /// Loads `url` in the tab.
    pub(crate) fn navigate(&mut self, session: &str, url: &str) {
        let answer = self.call(Some(session), "Page.navigate", json!({ "url": url }));
        if let Some(error) = answer.get("errorText") {
            panic!("Chromium could not load {url}: {error}");
        }
    }

    /// The value of a JavaScript expression in the tab (JSON-serialisable values only).
    pub(crate) fn evaluate(&mut self, session: &str, expression: &str) -> Value {
        let answer = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(details) = answer.get("exceptionDetails") {
            panic!("the expression threw: {details}\nexpression: {expression}");
        }
        answer["result"]["value"].clone()
    }

    /// Fails every request of the tab whose URL matches `pattern` (`*` wildcards), as a
    /// blocking proxy or extension would (`net::ERR_BLOCKED_BY_CLIENT`).
    pub(crate) fn block_requests(&mut self, session: &str, pattern: &str) {
        self.call(
            Some(session),
            "Fetch.enable",
            json!({ "patterns": [{ "urlPattern": pattern, "requestStage": "Request" }] }),
        );
    }

    /// Lets every request through again.
    pub(crate) fn unblock_requests(&mut self, session: &str) {
        self.call(Some(session), "Fetch.disable", json!({}));
    }

    /// URLs of the requests failed so far by [`Chromium::block_requests`].
    pub(crate) fn blocked_requests(&self) -> &[String] {
        &self.blocked_requests
    }

    /// Uncaught exceptions thrown by the tab's scripts so far.
    pub(crate) fn exceptions(&self) -> &[String] {
        &self.exceptions
    }

    /// Saves a PNG of the tab's viewport.
    pub(crate) fn screenshot(&mut self, session: &str, path: &Path) {
        let shot = self.call(
            Some(session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        let png = base64_decode(shot["data"].as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }

    /// Sends one command and waits for its answer, handling events meanwhile.
    pub(crate) fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.call_within(session, method, params, CALL_TIMEOUT)
    }

    fn call_within(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Value {
        let id = self.send(session, method, params);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "Chromium did not answer {method} within {timeout:?}{}",
                    self.log_tail()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "Chromium exited before answering {method}{}",
                        self.log_tail()
                    )
                }
            };
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("CDP {method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.handle_event(&message);
        }
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&command).unwrap();
        bytes.push(0);
        if let Err(error) = self.commands.write_all(&bytes) {
            panic!(
                "cannot send {method} to Chromium: {error}{}",
                self.log_tail()
            );
        }
        id
    }

    /// Events: paused requests are the blocked ones (only they match a Fetch pattern); an
    /// answer to an earlier fire-and-forget command is ignored.
    fn handle_event(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Fetch.requestPaused") => {
                let session = message["sessionId"].as_str().map(str::to_owned);
                self.blocked_requests
                    .push(params["request"]["url"].as_str().unwrap_or("?").to_owned());
                self.send(
                    session.as_deref(),
                    "Fetch.failRequest",
                    json!({ "requestId": params["requestId"], "errorReason": "BlockedByClient" }),
                );
            }
            Some("Runtime.exceptionThrown") => {
                self.exceptions.push(params["exceptionDetails"].to_string());
            }
            _ => {}
        }
    }

    /// The end of the browser's log, without its complaints about the missing D-Bus (headless
    /// Chromium in a container logs dozens; they never matter here).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains(":ERROR:dbus/"))
            .collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("\n--- last lines of {} ---\n{tail}", self.log.display())
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while a failing test unwinds.
        let mut close =
            serde_json::to_vec(&json!({ "id": 0, "method": "Browser.close" })).unwrap_or_default();
        close.push(0);
        let _ = self.commands.write_all(&close);
        let deadline = Instant::now() + CLOSE_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The group's leader is not reaped yet, so its ID still names this group only.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Standard base64 (screenshots come that way); panics on anything else.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    bytes
}
