//! Browser test of the dashboard (issue 3), on the real `tally` binary in headless Chromium.
//!
//! Goal: a viewer's page shows numbers that follow the votes — pushed over SSE, and, when the
//! SSE route is blocked, by polling the results route. Method: start `tally run --memory-only`
//! on a free port with a short SSE tick, drive Debian's `chromium` over the DevTools protocol
//! (`browser/chromium.rs`), cast votes over HTTP (`browser/node.rs`) and read the page's DOM
//! every 100 ms until it shows them; every wait is bounded. A missing Chromium fails the test
//! with install instructions; it never skips. Set `TALLY_DASHBOARD_SCREENSHOT=/tmp/x.png` to
//! keep a screenshot of the live page.
//!
//! Also the voting page (issue 9): it casts a vote through the browser client, fails over from
//! a region that is down, and then shows the live split; the same page voting through a
//! `tally edge` whose nearest region is down (issue 22); and the dashboard served by an edge
//! (issue 23) whose node stalls: it keeps the last figures, says how old they are, and goes
//! back to live figures when the node resumes.

// Test helpers outside `#[test]` functions: a panic is how they report a failure.
#![allow(clippy::unwrap_used)]

#[path = "browser/chromium.rs"]
mod chromium;
#[path = "kit/edge.rs"]
mod edge;
#[path = "kit/http.rs"]
#[allow(dead_code)] // the kit's process waits for readiness with it
mod http;
#[path = "browser/node.rs"]
mod node;
#[path = "kit/process.rs"]
mod process;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use chromium::Chromium;
use node::Node;

/// The poll every node serves from start-up.
const POLL: &str = "superbowl";
/// The node's SSE tick in this test (the default is 500 ms).
const SSE_TICK_MS: u64 = 100;
/// How long the page gets to show a change.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the page gets to go back to SSE once unblocked: it retries every 10 s.
const SSE_RETRY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the voting page gets to show a change: a bound, not a target (it may first spend
/// the browser client's whole 10 s deadline on a vote that cannot get through).
const VOTE_PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the DOM is read while waiting.
const READ_INTERVAL: Duration = Duration::from_millis(100);
/// The tab's size, in CSS pixels.
const VIEWPORT: (u32, u32) = (1280, 800);

/// Reads what the page shows, as a user would: visible text, digits only (so "1,234" is 1234).
/// `null` until the page has built its elements.
const READ_PAGE: &str = r#"(() => {
  const byId = (id) => document.getElementById(id);
  // The page may still be parsing: wait for every element read below without a guard.
  if (!["mode", "total", "follow", "slider"].every(byId)) return null;
  const digits = (element) => {
    const text = element ? element.textContent.replace(/[^0-9]/g, "") : "";
    return text === "" ? null : Number(text);
  };
  return {
    mode: byId("mode").textContent.trim(),
    total: digits(byId("total")),
    rate: digits(byId("rate")),
    following: byId("follow").dataset.following === "true",
    slider_max: Number(byId("slider").max),
    options: [...document.querySelectorAll("li[data-option]")].map((row) => ({
      name: row.dataset.option,
      votes: digits(row.querySelector(".votes")),
      share: row.querySelector(".share").textContent.trim(),
    })),
  };
})()"#;

/// What the page shows.
#[derive(Debug, Deserialize)]
struct Shown {
    mode: String,
    total: Option<i64>,
    rate: Option<i64>,
    following: bool,
    slider_max: u64,
    options: Vec<ShownOption>,
}

/// One option's row.
#[derive(Debug, Deserialize)]
struct ShownOption {
    name: String,
    votes: Option<i64>,
    share: String,
}

impl Shown {
    fn votes(&self, option: &str) -> Option<i64> {
        self.options.iter().find(|o| o.name == option)?.votes
    }

    fn share(&self, option: &str) -> Option<&str> {
        Some(
            self.options
                .iter()
                .find(|o| o.name == option)?
                .share
                .as_str(),
        )
    }

    /// Shows exactly these counts, and their sum as the total.
    fn counts(&self, green: i64, blue: i64) -> bool {
        self.votes("green") == Some(green)
            && self.votes("blue") == Some(blue)
            && self.total == Some(green + blue)
    }
}

/// A temporary directory, removed at drop (after the processes that use it: see [`Dashboard`]).
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "tally-browser-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node, a browser with one tab, and the votes cast so far. Fields drop in order: the
/// browser, then the node, then their scratch directory.
struct Dashboard {
    browser: Chromium,
    tab: String,
    node: Node,
    votes_cast: u32,
    label: &'static str,
    _scratch: Scratch,
}

impl Dashboard {
    fn start(label: &'static str) -> Dashboard {
        let scratch = Scratch::new(label);
        // The browser first: a machine without Chromium fails here, before anything else runs.
        let mut browser = Chromium::launch(&scratch.0);
        let node = Node::start(&scratch.0, SSE_TICK_MS);
        let tab = browser.open_tab(VIEWPORT.0, VIEWPORT.1);
        Dashboard {
            browser,
            tab,
            node,
            votes_cast: 0,
            label,
            _scratch: scratch,
        }
    }

    fn open(&mut self, path: &str) {
        let url = self.node.url(path);
        self.browser.navigate(&self.tab, &url);
    }

    /// Casts `count` new votes for `option`; returns the poll seconds they were stamped with.
    fn cast(&mut self, option: &str, count: u32) -> Vec<u64> {
        (0..count)
            .map(|_| {
                self.votes_cast += 1;
                let vote_id = format!("browser-{}-{}", self.label, self.votes_cast);
                self.node.vote(POLL, option, &vote_id)
            })
            .collect()
    }

    fn read(&mut self) -> Option<Shown> {
        let value = self.browser.evaluate(&self.tab, READ_PAGE);
        serde_json::from_value(value).unwrap()
    }

    /// Reads the page until `wanted` holds; panics with the last reading after `timeout`.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Shown) -> bool,
    ) -> Shown {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < timeout {
            if let Some(shown) = self.read() {
                if wanted(&shown) {
                    return shown;
                }
                last = Some(shown);
            }
            std::thread::sleep(READ_INTERVAL);
        }
        panic!(
            "the dashboard did not show {what} within {timeout:?}; it showed: {last:#?}\n\
             blocked requests: {:?}\nscript exceptions: {:?}",
            self.browser.blocked_requests(),
            self.browser.exceptions()
        );
    }

    fn assert_no_script_errors(&self) {
        let exceptions = self.browser.exceptions();
        assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
    }
}

#[test]
fn dashboard_shows_votes_as_they_arrive_over_sse() {
    // Goal: over SSE the bars, counts, shares, total and rate follow the votes, and the history
    // slider shows the split the node reports for a past second.
    let mut page = Dashboard::start("live");
    let first_seconds = page.cast("green", 2);
    let first_second = first_seconds
        .into_iter()
        .chain(page.cast("blue", 1))
        .max()
        .unwrap();

    page.open(&format!("/polls/{POLL}"));
    page.wait_for("green 2, blue 1, live over SSE", SHOW_TIMEOUT, |s| {
        s.mode == "live" && s.counts(2, 1)
    });

    let later_seconds: Vec<u64> = page
        .cast("green", 5)
        .into_iter()
        .chain(page.cast("blue", 2))
        .collect();
    let shown = page.wait_for(
        "green 7, blue 3 (70.0% / 30.0%), still live",
        SHOW_TIMEOUT,
        |s| s.mode == "live" && s.counts(7, 3),
    );
    assert_eq!(shown.share("green"), Some("70.0%"), "{shown:#?}");
    assert_eq!(shown.share("blue"), Some("30.0%"), "{shown:#?}");
    // The voting page's colour rule (client.js's optionColor): green is green, blue is blue.
    let colors = page.browser.evaluate(
        &page.tab,
        "['green', 'blue'].map((o) => document.querySelector(`li[data-option=${o}]`)\
         .style.getPropertyValue('--color'))",
    );
    assert_eq!(colors, serde_json::json!(["#22c55e", "#3b82f6"]));
    page.wait_for("a votes-per-second figure above zero", SHOW_TIMEOUT, |s| {
        s.rate.is_some_and(|rate| rate > 0)
    });

    // The slider: the split at the first votes' second, as `?at=` reports it.
    page.wait_for(
        "a slider reaching past the first votes' second",
        SHOW_TIMEOUT,
        |s| s.slider_max > first_second,
    );
    page.browser.evaluate(
        &page.tab,
        &format!(
            "(() => {{ const s = document.getElementById('slider'); s.value = '{first_second}'; \
             s.dispatchEvent(new Event('input')); }})()"
        ),
    );
    let at = page
        .node
        .get_json(&format!("/v1/polls/{POLL}/results?at={first_second}"));
    let votes_at = |option: usize| at["options"][option]["votes"].as_i64().unwrap();
    let (green_at, blue_at) = (votes_at(0), votes_at(1));
    if later_seconds.iter().all(|s| *s > first_second) {
        assert_eq!(
            (green_at, blue_at),
            (2, 1),
            "results?at={first_second}: {at}"
        );
    }
    page.wait_for(
        &format!("the split at second {first_second}: green {green_at}, blue {blue_at}"),
        SHOW_TIMEOUT,
        |s| !s.following && s.counts(green_at, blue_at),
    );
    page.browser
        .evaluate(&page.tab, "document.getElementById('live-button').click()");
    page.wait_for(
        "the live split again after 'Back to live'",
        SHOW_TIMEOUT,
        |s| s.following && s.counts(7, 3),
    );

    // Everything the page loaded came from the node itself.
    let foreign = page.browser.evaluate(
        &page.tab,
        "performance.getEntriesByType('resource').map((e) => e.name)\
         .filter((name) => !name.startsWith(location.origin + '/'))",
    );
    assert_eq!(
        foreign,
        serde_json::json!([]),
        "the page loaded resources from elsewhere"
    );
    if let Some(path) = std::env::var_os("TALLY_DASHBOARD_SCREENSHOT") {
        page.browser
            .screenshot(&page.tab, PathBuf::from(path).as_path());
    }
    page.assert_no_script_errors();
}

#[test]
fn dashboard_keeps_updating_by_polling_when_sse_is_blocked() {
    // Goal: with the SSE route blocked the page says "polling" and still follows the votes,
    // and it returns to SSE by itself once the route works again.
    let mut page = Dashboard::start("polling");
    page.browser.block_requests(&page.tab, "*/stream*");
    page.cast("green", 1);

    page.open(&format!("/polls/{POLL}"));
    page.wait_for("green 1, blue 0, polling", SHOW_TIMEOUT, |s| {
        s.mode == "polling" && s.counts(1, 0)
    });
    assert!(
        !page.browser.blocked_requests().is_empty(),
        "the page never tried the SSE route"
    );

    page.cast("green", 3);
    page.cast("blue", 4);
    let shown = page.wait_for("green 4, blue 4, still polling", SHOW_TIMEOUT, |s| {
        s.mode == "polling" && s.counts(4, 4)
    });
    assert_eq!(shown.share("green"), Some("50.0%"), "{shown:#?}");

    page.browser.unblock_requests(&page.tab);
    page.wait_for("live over SSE again", SSE_RETRY_TIMEOUT, |s| {
        s.mode == "live"
    });
    page.cast("blue", 1);
    page.wait_for("green 4, blue 5, live", SHOW_TIMEOUT, |s| {
        s.mode == "live" && s.counts(4, 5)
    });
    page.assert_no_script_errors();
}

/// Reads the voting page: its buttons, status line, which endpoint took the vote, the split;
/// `null` while the page is still loading.
const READ_VOTE_PAGE: &str = r##"(() => {
  const status = document.getElementById("status");
  const split = document.getElementById("split");
  if (!document.body || !status || !split) return null; // still loading
  return {
    buttons: [...document.querySelectorAll("#choices button")].map((b) => b.dataset.option),
    colors: [...document.querySelectorAll("#choices button")].map((b) => getComputedStyle(b).backgroundColor),
    state: status.dataset.state || "",
    status: status.textContent.trim(),
    voted_via: document.body.dataset.votedVia || "",
    split_visible: !split.hidden,
    total: Number((document.getElementById("total").textContent || "").replace(/[^0-9]/g, "") || "-1"),
  };
})()"##;

/// What the voting page shows.
#[derive(Debug, Deserialize)]
struct VotePage {
    buttons: Vec<String>,
    /// Each button's computed background colour, in the order of `buttons`.
    colors: Vec<String>,
    state: String,
    status: String,
    voted_via: String,
    split_visible: bool,
    total: i64,
}

fn wait_for_vote_page(
    browser: &mut Chromium,
    tab: &str,
    what: &str,
    wanted: impl Fn(&VotePage) -> bool,
) -> VotePage {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < VOTE_PAGE_TIMEOUT {
        let shown: Option<VotePage> =
            serde_json::from_value(browser.evaluate(tab, READ_VOTE_PAGE)).unwrap();
        if let Some(shown) = shown {
            if wanted(&shown) {
                return shown;
            }
            last = Some(shown);
        }
        std::thread::sleep(READ_INTERVAL);
    }
    panic!(
        "the voting page did not show {what} within {VOTE_PAGE_TIMEOUT:?}; it showed {last:#?}\n\
         script exceptions: {:?}",
        browser.exceptions()
    );
}

#[test]
fn voting_page_casts_a_vote_fails_over_from_a_region_that_is_down_and_shows_the_live_split() {
    // Goal: the voting page an app links to works for a viewer when the nearest region is down.
    // Method: the node lists a region that nothing serves as its nearest public endpoint; the
    // page must show the options, count one tap exactly once through this node, say so, and
    // follow the live split as more votes arrive.
    let scratch = Scratch::new("vote");
    let mut browser = Chromium::launch(&scratch.0);
    let down = format!("http://{}", process::free_tcp_address());
    let node = Node::start_with(
        &scratch.0,
        SSE_TICK_MS,
        &["--public-endpoints".to_owned(), down.clone()],
    );
    let tab = browser.open_tab(VIEWPORT.0, VIEWPORT.1);
    browser.navigate(&tab, &node.url(&format!("/vote/{POLL}")));
    let shown = wait_for_vote_page(&mut browser, &tab, "the two options", |p| {
        p.buttons == ["green", "blue"]
    });
    // One colour rule for every page: the option named green is green, blue is blue.
    assert_eq!(
        shown.colors,
        ["rgb(34, 197, 94)", "rgb(59, 130, 246)"],
        "{shown:#?}"
    );
    browser.evaluate(
        &tab,
        "document.querySelector('#choices button[data-option=green]').click()",
    );
    let shown = wait_for_vote_page(&mut browser, &tab, "'Counted: green'", |p| {
        p.state == "counted"
    });
    assert_eq!(shown.status, "Counted: green", "{shown:#?}");
    assert_eq!(
        shown.voted_via,
        node.url("").trim_end_matches('/'),
        "the vote should have failed over from {down} to this node"
    );
    wait_for_vote_page(&mut browser, &tab, "the live split with 1 vote", |p| {
        p.split_visible && p.total == 1
    });
    node.vote(POLL, "blue", "vote-page-other-viewer");
    wait_for_vote_page(&mut browser, &tab, "the live split with 2 votes", |p| {
        p.total == 2
    });
    let results = node.get_json(&format!("/v1/polls/{POLL}/results"));
    assert_eq!(
        results["options"][0]["votes"], 1,
        "one tap, one vote: {results}"
    );
    let exceptions = browser.exceptions();
    assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
}

#[test]
fn voting_page_votes_through_an_edge_whose_nearest_region_is_down() {
    // Goal: phones vote through the edge tier (issue 22) with the browser client unchanged, and
    // a region that is down costs them nothing but a longer path. Method: a node whose public
    // endpoint is one `tally edge`; the edge lists a region that nothing serves as its nearest
    // upstream, then the node. The page must count one tap exactly once, through the edge
    // (its answer names the edge as the way the vote went), and show the live split.
    let scratch = Scratch::new("edge-vote");
    let mut browser = Chromium::launch(&scratch.0);
    let down = process::free_tcp_address();
    let edge_address = process::free_tcp_address();
    let edge_url = format!("http://{edge_address}");
    let node = Node::start_with(
        &scratch.0,
        SSE_TICK_MS,
        &["--public-endpoints".to_owned(), edge_url.clone()],
    );
    let mut edge = edge::EdgeProcess::spawn_at(
        edge_address,
        "edge",
        &[down, node.address()],
        &scratch.0,
        &[],
    );
    edge.wait_ready(Instant::now() + Duration::from_secs(30));
    let tab = browser.open_tab(VIEWPORT.0, VIEWPORT.1);
    browser.navigate(&tab, &node.url(&format!("/vote/{POLL}")));
    wait_for_vote_page(&mut browser, &tab, "the two options", |p| {
        p.buttons == ["green", "blue"]
    });
    browser.evaluate(
        &tab,
        "document.querySelector('#choices button[data-option=blue]').click()",
    );
    let shown = wait_for_vote_page(&mut browser, &tab, "'Counted: blue'", |p| {
        p.state == "counted"
    });
    assert_eq!(shown.status, "Counted: blue", "{shown:#?}");
    assert_eq!(
        shown.voted_via, edge_url,
        "the vote should have gone through the edge"
    );
    wait_for_vote_page(&mut browser, &tab, "the live split with 1 vote", |p| {
        p.split_visible && p.total == 1
    });
    let results = node.get_json(&format!("/v1/polls/{POLL}/results"));
    assert_eq!(
        (
            results["options"][0]["votes"].as_i64(),
            results["options"][1]["votes"].as_i64()
        ),
        (Some(0), Some(1)),
        "one tap through the edge, one vote for blue: {results}"
    );
    let exceptions = browser.exceptions();
    assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
}

#[test]
fn voting_page_sends_an_unconfirmed_vote_again_with_its_own_vote_id() {
    // Goal: a tap after "may have been counted" cannot count a second vote. Method: block the
    // vote route in the browser (a failed fetch cannot be told from a lost answer, so the page
    // must say the vote may have been counted), unblock it, and tap the OTHER option: the page
    // must finish the first vote (same vote ID, same option) rather than cast a new one.
    let scratch = Scratch::new("unsettled");
    let mut browser = Chromium::launch(&scratch.0);
    let node = Node::start(&scratch.0, SSE_TICK_MS);
    let tab = browser.open_tab(VIEWPORT.0, VIEWPORT.1);
    browser.navigate(&tab, &node.url(&format!("/vote/{POLL}")));
    wait_for_vote_page(&mut browser, &tab, "the two options", |p| {
        p.buttons == ["green", "blue"]
    });
    browser.block_requests(&tab, "*/votes*");
    browser.evaluate(
        &tab,
        "document.querySelector('#choices button[data-option=green]').click()",
    );
    let shown = wait_for_vote_page(&mut browser, &tab, "an unconfirmed vote", |p| {
        p.state == "error"
    });
    assert!(shown.status.contains("may have been counted"), "{shown:#?}");
    browser.unblock_requests(&tab);
    browser.evaluate(
        &tab,
        "document.querySelector('#choices button[data-option=blue]').click()",
    );
    let shown = wait_for_vote_page(&mut browser, &tab, "the first vote settled", |p| {
        p.state == "counted" || p.state == "duplicate"
    });
    assert!(shown.status.ends_with("green"), "{shown:#?}");
    let results = node.get_json(&format!("/v1/polls/{POLL}/results"));
    assert_eq!(
        results["options"][1]["votes"], 0,
        "no second vote: {results}"
    );
    let exceptions = browser.exceptions();
    assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
}

/// Reads the dashboard's stale notice and total: `null` while the page is loading.
const READ_STALENESS: &str = r#"(() => {
  const stale = document.getElementById("stale");
  const total = document.getElementById("total");
  const mode = document.getElementById("mode");
  if (!stale || !total || !mode) return null;
  const digits = total.textContent.replace(/[^0-9]/g, "");
  return {
    stale: stale.hidden ? "" : stale.dataset.stale,
    notice: stale.textContent.trim(),
    total: digits === "" ? -1 : Number(digits),
    mode: mode.textContent.trim(),
  };
})()"#;

/// The dashboard's staleness as read by [`READ_STALENESS`].
#[derive(Debug, Deserialize)]
struct Staleness {
    stale: String,
    notice: String,
    total: i64,
    mode: String,
}

fn wait_for_staleness(
    browser: &mut Chromium,
    tab: &str,
    what: &str,
    wanted: impl Fn(&Staleness) -> bool,
) -> Staleness {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < VOTE_PAGE_TIMEOUT {
        let shown: Option<Staleness> =
            serde_json::from_value(browser.evaluate(tab, READ_STALENESS)).unwrap();
        if let Some(shown) = shown {
            if wanted(&shown) {
                return shown;
            }
            last = Some(shown);
        }
        std::thread::sleep(READ_INTERVAL);
    }
    panic!(
        "the dashboard did not show {what} within {VOTE_PAGE_TIMEOUT:?}; it showed {last:#?}\n\
         script exceptions: {:?}",
        browser.exceptions()
    );
}

#[test]
fn dashboard_through_an_edge_whose_node_stalls_shows_stale_figures_then_recovers() {
    // Goal: degrade, do not fail (issue 23): the dashboard served by an edge keeps the last
    // figures when the edge's node stalls, says they are stale with their time, and goes back
    // to live figures when the node resumes. Method: `tally run` and `tally edge` in front
    // (staleness limit 1.5 s); the page opened on the edge; the node SIGSTOPped, then
    // SIGCONTed, as a hung process would be.
    let scratch = Scratch::new("edge-stale");
    let mut browser = Chromium::launch(&scratch.0);
    let node = Node::start(&scratch.0, SSE_TICK_MS);
    let config = scratch.0.join("edge.toml");
    std::fs::write(&config, "fanout_stale_after_ms = 1500\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut edge = edge::EdgeProcess::spawn(
        "edge",
        &[node.address()],
        &scratch.0,
        &["--config", &config],
    );
    edge.wait_ready(Instant::now() + Duration::from_secs(30));
    let tab = browser.open_tab(VIEWPORT.0, VIEWPORT.1);
    node.vote(POLL, "green", "edge-stale-1");
    browser.navigate(&tab, &format!("http://{}/polls/{POLL}", edge.http));
    wait_for_staleness(&mut browser, &tab, "1 vote, live, fresh", |s| {
        s.total == 1 && s.mode == "live" && s.stale.is_empty()
    });

    node.signal("STOP");
    let stale = wait_for_staleness(&mut browser, &tab, "the stale notice", |s| {
        s.stale == "upstream"
    });
    node.signal("CONT");
    assert_eq!(stale.total, 1, "the last figures stay: {stale:?}");
    assert!(stale.notice.contains("as of"), "{stale:?}");

    node.vote(POLL, "blue", "edge-stale-2");
    wait_for_staleness(&mut browser, &tab, "2 votes, fresh again", |s| {
        s.total == 2 && s.stale.is_empty() && s.mode == "live"
    });
    let exceptions = browser.exceptions();
    assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
}
