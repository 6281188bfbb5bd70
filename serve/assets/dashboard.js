// Tally dashboard: follows one poll live and scrubs through its history.
//
// Data: GET /v1/polls (the list, and when each poll opened), GET /v1/polls/{poll}/results,
// GET /v1/polls/{poll}/history (net votes per poll second), and the SSE stream
// GET /v1/polls/{poll}/stream, whose `results` events carry the same JSON as the results route.
//
// Connection: SSE first ("live"). If the stream errors or sends nothing within a few seconds
// of opening, the page polls the results route every second ("polling") and tries SSE again
// every SSE_RETRY_MS; while the node cannot be reached it shows "offline" and backs off.
//
// Staleness: an edge in front of the nodes says when its figures are old (no node's stream
// heard for a while: `stale` events, or the `tally-stale-seconds` header on polled results) or
// come on a slower tick (it sheds votes); #stale (data-stale: upstream, shedding, or empty)
// then shows the figures' as-of time, and the last figures stay on screen.
//
// The elements the browser test reads: #mode (text and data-mode: live, polling, offline,
// connecting), #stale, #total, #rate, and one li[data-option="NAME"] per option holding .votes and
// .share. Numbers are shown formatted ("1,234"); data-value carries the raw number. Option
// colours come from the browser client's one rule (`optionColor` in /client.js), which the
// voting page shares. An ES module (strict by itself).
import { optionColor } from "/client.js";

(() => {
  const SSE_FIRST_EVENT_TIMEOUT_MS = 4000; // the node sends the current results on connect
  const SSE_RETRY_MS = 10000;              // while polling, how often SSE is tried again
  const LIVE_SILENCE_REOPEN_MS = 60000;    // reopen a stream this quiet, in case it died silently
  const POLL_INTERVAL_MS = 1000;
  const POLL_BACKOFF_MAX_MS = 5000;
  const POLL_FAILURES_OFFLINE = 2;         // consecutive failed polls before showing "offline"
  const FETCH_TIMEOUT_MS = 5000;
  const TICK_MS = 500;                     // rate, slider and chart refresh
  const RATE_WINDOW_MS = 3000;             // votes per second is averaged over this window
  const HISTORY_REFRESH_MS = 2000;         // history is fetched at most this often,
  const HISTORY_REFRESH_MS_PER_POINT = 10; // and less often as it grows (its size, per viewer)
  const POLLS_REFRESH_MS = 5000;           // the poll list, when a poll's status changes
  const CHART_COLUMNS_MAX = 240;
  const CHART_BAR_WIDTH_MAX = 16;          // in the chart's 1000-unit-wide coordinates

  const MODE_TITLES = {
    connecting: "Connecting to the node",
    live: "Live: the node pushes results over SSE",
    polling: "SSE unavailable: asking the node for results every second",
    offline: "Cannot reach the node; retrying",
  };

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat();
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const state = {
    poll: null,          // the poll's id
    polls: [],           // GET /v1/polls
    info: null,          // this poll's entry in `polls`
    skewMs: 0,           // server clock minus ours, from the Date header
    pollsLoadedAt: 0,
    latest: null,        // the newest live results
    history: null,       // GET /v1/polls/{poll}/history
    historyAsOf: -1,     // latest.as_of_ms when the history was fetched
    historyFetchedAt: -Infinity,
    historyLoading: false,
    following: true,     // the slider sits at the live end
    selected: 0,         // the poll second shown when not following
    maxSecond: 0,
    samples: [],         // {t, total}: recent totals, for votes per second
    peakRate: 0,
    mode: "connecting",
    optionsKey: "",      // option names the rows were built for
    liveTail: new Map(), // second → votes per option seen live since the history was fetched
    chartVersion: 0,     // bumped when the chart's data changes
    chartKey: "",        // what the chart was last drawn for
  };

  const conn = {
    source: null,
    firstEventTimer: 0,
    retryTimer: 0,
    lastEventAt: 0,
    polling: false,
    pollGeneration: 0,
    failures: 0,
  };

  // ---- helpers ------------------------------------------------------------------------------

  const pollPath = () => `/v1/polls/${encodeURIComponent(state.poll)}`;

  function pollFromLocation() {
    const match = location.pathname.match(/^\/polls\/([^/]+)\/?$/);
    if (!match) return null;
    try {
      return decodeURIComponent(match[1]);
    } catch {
      return match[1];
    }
  }

  async function fetchJson(url) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    try {
      const response = await fetch(url, {
        signal: controller.signal,
        cache: "no-store",
        headers: { accept: "application/json" },
      });
      if (!response.ok) {
        const error = new Error(`${url}: HTTP ${response.status}`);
        error.status = response.status;
        throw error;
      }
      return { body: await response.json(), response };
    } finally {
      clearTimeout(timer);
    }
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  function setNumber(element, value) {
    element.dataset.value = String(value);
    element.textContent = numbers.format(value);
  }

  function showMessage(text) {
    const message = $("message");
    message.textContent = text ?? "";
    message.hidden = !text;
  }

  function showStale(stale) {
    const element = $("stale");
    element.hidden = !stale;
    element.dataset.stale = stale ? stale.reason : "";
    if (!stale) return;
    const asOf = stale.as_of_ms ? new Date(stale.as_of_ms).toLocaleTimeString() : "earlier";
    element.textContent = stale.reason === "upstream"
      ? `Figures as of ${asOf}: no word from the vote counters for ${stale.stale_seconds} s; ` +
        "showing the last results"
      : `Figures as of ${asOf}: updates slowed while voting is busy`;
  }

  function setMode(mode) {
    if (state.mode === mode) return;
    state.mode = mode;
    const element = $("mode");
    element.dataset.mode = mode;
    element.textContent = mode;
    element.title = MODE_TITLES[mode] ?? "";
  }

  // ---- connection: SSE with a polling fallback ------------------------------------------------

  function openStream() {
    closeStream();
    clearTimeout(conn.retryTimer);
    if (typeof EventSource !== "function") {
      startPolling();
      return;
    }
    const source = new EventSource(`${pollPath()}/stream`);
    conn.source = source;
    conn.firstEventTimer = setTimeout(() => {
      if (conn.source === source) streamFailed();
    }, SSE_FIRST_EVENT_TIMEOUT_MS);
    source.addEventListener("results", (event) => {
      if (conn.source !== source) return;
      clearTimeout(conn.firstEventTimer);
      conn.lastEventAt = performance.now();
      let results;
      try {
        results = JSON.parse(event.data);
      } catch {
        return;
      }
      stopPolling();
      conn.failures = 0;
      setMode("live");
      showStale(null); // a `stale` event right after these results says otherwise
      onResults(results);
    });
    source.addEventListener("stale", (event) => {
      if (conn.source !== source) return;
      conn.lastEventAt = performance.now();
      try {
        showStale(JSON.parse(event.data));
      } catch {
        // Not an edge's stale notice: ignored.
      }
    });
    source.addEventListener("error", () => {
      if (conn.source === source) streamFailed();
    });
  }

  function closeStream() {
    clearTimeout(conn.firstEventTimer);
    if (conn.source) {
      conn.source.close();
      conn.source = null;
    }
  }

  function streamFailed() {
    closeStream();
    startPolling();
    clearTimeout(conn.retryTimer);
    conn.retryTimer = setTimeout(openStream, SSE_RETRY_MS);
  }

  function startPolling() {
    if (conn.polling) return;
    conn.polling = true;
    conn.pollGeneration += 1;
    if (state.mode !== "offline") setMode("polling");
    pollLoop(conn.pollGeneration);
  }

  function stopPolling() {
    conn.polling = false;
    conn.pollGeneration += 1;
  }

  async function pollLoop(generation) {
    const current = () => conn.polling && conn.pollGeneration === generation;
    while (current()) {
      let delay = POLL_INTERVAL_MS;
      try {
        const { body, response } = await fetchJson(`${pollPath()}/results`);
        if (!current()) return;
        conn.failures = 0;
        setMode("polling");
        const stale = response.headers.get("tally-stale-seconds");
        showStale(stale === null ? null
          : { reason: "upstream", as_of_ms: body.as_of_ms, stale_seconds: Number(stale) });
        onResults(body);
      } catch {
        if (!current()) return;
        conn.failures += 1;
        if (conn.failures >= POLL_FAILURES_OFFLINE) setMode("offline");
        delay = Math.min(POLL_INTERVAL_MS * 2 ** conn.failures, POLL_BACKOFF_MAX_MS);
      }
      await sleep(delay);
    }
  }

  // ---- data ---------------------------------------------------------------------------------

  async function loadPolls() {
    const { body, response } = await fetchJson("/v1/polls");
    const serverDate = Date.parse(response.headers.get("date") ?? "");
    if (Number.isFinite(serverDate)) {
      // The Date header has whole seconds; only a clearly wrong local clock is corrected.
      const skew = serverDate + 500 - Date.now();
      state.skewMs = Math.abs(skew) > 1500 ? skew : 0;
    }
    state.polls = Array.isArray(body) ? body : [];
    state.pollsLoadedAt = performance.now();
    state.info = state.polls.find((p) => p.id === state.poll) ?? state.info;
  }

  function onResults(results) {
    if (!results || results.poll !== state.poll) return;
    const previous = state.latest;
    if (previous && results.as_of_ms < previous.as_of_ms) return; // an older answer, late
    state.latest = results;
    recordTotal(results.total);
    if (previous) addToLiveTail(previous, results);
    if (previous && previous.status !== results.status) refreshPolls();
    render();
  }

  async function refreshPolls() {
    if (performance.now() - state.pollsLoadedAt < POLLS_REFRESH_MS) return;
    try {
      await loadPolls();
      renderNav();
    } catch {
      // The connection indicator already tells; the next status change tries again.
    }
  }

  async function refreshHistory() {
    if (state.historyLoading || !state.poll) return;
    state.historyLoading = true;
    const asOf = state.latest?.as_of_ms ?? -1;
    try {
      const { body } = await fetchJson(`${pollPath()}/history`);
      state.history = body;
      state.historyAsOf = asOf;
      state.historyFetchedAt = performance.now();
      state.liveTail.clear();
      state.chartVersion += 1;
      updateTimeline();
      if (!state.following) render();
    } catch {
      state.historyFetchedAt = performance.now(); // retry after the usual pause
    } finally {
      state.historyLoading = false;
    }
  }

  // Between history fetches the chart grows from the live results: each change is drawn in
  // the current poll second (only drawn: the slider's splits come from the fetched history).
  function addToLiveTail(previous, results) {
    if (previous.options.length !== results.options.length) return;
    const deltas = results.options.map((o, i) => o.votes - previous.options[i].votes);
    if (deltas.every((d) => d === 0)) return;
    const second = liveSecond();
    const bucket = state.liveTail.get(second) ?? deltas.map(() => 0);
    deltas.forEach((d, i) => { bucket[i] += d; });
    state.liveTail.set(second, bucket);
    state.chartVersion += 1;
  }

  function historyRefreshDue() {
    const points = state.history?.points.length ?? 0;
    const pause = Math.max(HISTORY_REFRESH_MS, points * HISTORY_REFRESH_MS_PER_POINT);
    return performance.now() - state.historyFetchedAt >= pause;
  }

  function historyIsStale() {
    return state.latest !== null && state.latest.as_of_ms !== state.historyAsOf;
  }

  // Votes per second: the change of the live total over the last RATE_WINDOW_MS. The tick
  // records the total too, so the rate falls back to zero when votes stop.
  function recordTotal(total) {
    const now = performance.now();
    state.samples.push({ t: now, total });
    while (state.samples.length > 2 && state.samples[1].t <= now - RATE_WINDOW_MS) {
      state.samples.shift();
    }
  }

  function currentRate() {
    const samples = state.samples;
    if (samples.length < 2) return null;
    const now = performance.now();
    const base = samples[0];
    const latest = samples[samples.length - 1];
    const seconds = (now - base.t) / 1000;
    if (seconds < 1) return null;
    const rate = Math.max(0, (latest.total - base.total) / seconds);
    if (now - base.t >= RATE_WINDOW_MS * 0.9) state.peakRate = Math.max(state.peakRate, rate);
    return rate;
  }

  // The latest poll second: by the (server-corrected) clock while the poll is open, never
  // before the last second that has votes.
  function liveSecond() {
    const points = state.history?.points ?? [];
    const lastWithVotes = points.length ? points[points.length - 1].second : 0;
    const info = state.info;
    if (!info || info.opens_at_ms == null) return lastWithVotes;
    let end = Date.now() + state.skewMs;
    if (info.closes_at_ms != null) end = Math.min(end, info.closes_at_ms);
    const elapsed = Math.floor((end - info.opens_at_ms) / 1000);
    return Math.max(0, elapsed, lastWithVotes);
  }

  // The split up to and including poll second `at`: the prefix sum of the history.
  function splitAt(at) {
    const names = state.history?.options ?? state.latest?.options.map((o) => o.name) ?? [];
    const votes = names.map(() => 0);
    let inSecond = 0;
    for (const point of state.history?.points ?? []) {
      if (point.second > at) break;
      point.votes.forEach((v, i) => { votes[i] += v; });
      if (point.second === at) inSecond = point.votes.reduce((a, b) => a + b, 0);
    }
    const total = votes.reduce((a, b) => a + b, 0);
    const options = names.map((name, i) => ({
      name,
      votes: votes[i],
      share: total > 0 ? votes[i] / total : 0,
    }));
    return { options, total, inSecond };
  }

  // ---- rendering ----------------------------------------------------------------------------

  function render() {
    if (!state.latest) return;
    const live = state.latest;
    const view = state.following ? live : splitAt(state.selected);
    renderOptions(view.options, view.total);
    setNumber($("total"), view.total);
    $("total-label").textContent = state.following
      ? "Total votes"
      : `Total at ${clock(state.selected)}`;
    renderRate(view);
    renderStatus(live.status);
    renderDispute(live.dispute);
    renderFooter(live);
    document.title = `${state.poll} · Tally`;
  }

  function renderRate(view) {
    const rate = $("rate");
    if (!state.following) {
      $("rate-label").textContent = `Votes in second ${clock(state.selected)}`;
      setNumber(rate, view.inSecond);
      $("peak").textContent = "";
      return;
    }
    $("rate-label").textContent = "Votes per second";
    const value = currentRate();
    if (value === null) {
      rate.dataset.value = "";
      rate.textContent = "–";
    } else {
      setNumber(rate, Math.round(value));
    }
    $("peak").textContent = state.peakRate >= 1
      ? `peak ${numbers.format(Math.round(state.peakRate))}/s`
      : "";
  }

  function renderOptions(options, total) {
    const list = $("options");
    const key = options.map((o) => o.name).join("\u0000");
    if (key !== state.optionsKey) {
      list.replaceChildren(...options.map((o, i) => optionRow(o.name, i)));
      state.optionsKey = key;
      list.dataset.compact = String(options.length > 3);
    }
    const top = Math.max(...options.map((o) => o.votes));
    const leaders = options.filter((o) => o.votes === top).length;
    options.forEach((option, i) => {
      const row = list.children[i];
      const percent = option.share * 100;
      row.querySelector(".share").textContent = `${percent.toFixed(1)}%`;
      row.querySelector(".share").dataset.value = String(option.share);
      setNumber(row.querySelector(".votes"), option.votes);
      row.querySelector(".fill").style.width = `${Math.max(0, Math.min(100, percent))}%`;
      row.dataset.leading = String(total > 0 && option.votes === top && leaders === 1);
      row.querySelector(".bar").setAttribute(
        "aria-label",
        `${option.name}: ${percent.toFixed(1)} percent, ${option.votes} votes`,
      );
    });
  }

  function optionRow(name, index) {
    const row = document.createElement("li");
    row.className = "option";
    row.dataset.option = name;
    row.style.setProperty("--color", optionColor(name, index));
    const head = document.createElement("div");
    head.className = "option-head";
    head.append(span("name", name), span("lead-tag", "leading"), span("share", "0.0%"));
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.append(span("fill", ""));
    const foot = document.createElement("div");
    foot.className = "option-foot";
    foot.append(span("votes", "0"), " votes");
    row.append(head, bar, foot);
    return row;
  }

  function span(className, text) {
    const element = document.createElement("span");
    element.className = className;
    element.textContent = text;
    return element;
  }

  // Another node lists this poll's options otherwise: say so, and whether this node refuses.
  function renderDispute(dispute) {
    const element = $("dispute");
    element.textContent = dispute?.message ?? "";
    element.dataset.refusing = String(dispute?.refusing_votes ?? false);
    element.hidden = !dispute;
  }

  function renderStatus(status) {
    const badge = $("poll-status");
    badge.dataset.status = status;
    badge.textContent = status === "not_open" ? "not open" : status;
  }

  // Which nodes this one syncs with (listed or not), and whether a session is up: the regions
  // these results can include.
  function renderFooter(results) {
    const actors = results.includes?.length ?? 0;
    const peers = (results.peers ?? [])
      .map((peer) => (peer.connected ? peer.node : `${peer.node} (no session)`))
      .join(", ");
    $("served-by").textContent =
      `served by ${results.served_by} · ${actors} ${actors === 1 ? "actor" : "actors"}` +
      (peers ? ` · syncing with ${peers}` : " · no peers");
    $("as-of").textContent = `updated ${new Date(results.as_of_ms).toLocaleTimeString()}`;
    renderClockOffset(results.clock_offsets_ms ?? {});
  }

  // The widest clock offset between this node and a peer: a region whose clock drifts shows
  // here before (and while) its node stops counting.
  function renderClockOffset(byNode) {
    const offsets = Object.entries(byNode)
      .filter(([, ms]) => Number.isFinite(ms))
      .map(([node, ms]) => ({ node, ms }));
    const element = $("clock-offset");
    if (offsets.length === 0) {
      element.hidden = true;
      return;
    }
    const widest = offsets.reduce((a, b) => (Math.abs(b.ms) > Math.abs(a.ms) ? b : a));
    element.hidden = false;
    element.dataset.node = widest.node;
    // Past a quarter second (the TallyClockOffset alert) the footer names the peer.
    const far = Math.abs(widest.ms) > 250;
    element.dataset.far = String(far);
    element.textContent = far
      ? `${widest.node}'s clock ${widest.ms > 0 ? "+" : "−"}${formatMs(Math.abs(widest.ms))} off`
      : `peer clocks within ±${formatMs(Math.abs(widest.ms))}`;
    element.title = offsets.map((o) => `${o.node}: ${o.ms >= 0 ? "+" : ""}${o.ms} ms`).join("\n");
  }

  function formatMs(ms) {
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  }

  function renderNav() {
    const nav = $("polls");
    nav.replaceChildren(...state.polls.map((poll) => {
      const link = document.createElement("a");
      link.href = `/polls/${encodeURIComponent(poll.id)}`;
      link.textContent = poll.id;
      if (poll.id === state.poll) link.setAttribute("aria-current", "page");
      return link;
    }));
    nav.hidden = state.polls.length < 2;
  }

  // ---- history: slider and chart ------------------------------------------------------------

  function select(second) {
    const slider = $("slider");
    if (second === null || second >= Number(slider.max)) {
      state.following = true;
      slider.value = slider.max;
    } else {
      state.following = false;
      state.selected = Math.max(0, second);
      slider.value = String(state.selected);
      if (historyIsStale()) refreshHistory();
    }
    updateFollow();
    render();
  }

  function updateFollow() {
    const follow = $("follow");
    follow.dataset.following = String(state.following);
    const status = state.latest?.status;
    const end = status === "closed" ? "Final result" : status === "not_open" ? "Not open yet" : "Following live";
    follow.textContent = state.following ? end : "Paused on history";
    $("live-button").hidden = state.following;
    $("at-label").textContent = state.following
      ? `poll time ${clock(state.maxSecond)}`
      : `showing the split at ${clock(state.selected)} of ${clock(state.maxSecond)}`;
    const share = state.following ? 1 : (state.selected + 1) / (state.maxSecond + 1);
    $("chart-cursor").style.left = `${share * 100}%`;
    $("chart-future").style.width = `${(1 - share) * 100}%`;
  }

  function updateTimeline() {
    const slider = $("slider");
    const max = liveSecond();
    state.maxSecond = max;
    slider.max = String(max);
    slider.disabled = !state.info?.opens_at_ms && !(state.history?.points.length > 0);
    if (state.following) slider.value = String(max);
    $("scale-end").textContent = clock(max);
    updateFollow();
    drawChart(max);
  }

  function drawChart(max) {
    const points = state.history?.points ?? [];
    const names = state.history?.options ?? state.latest?.options.map((o) => o.name) ?? [];
    const key = `${max}|${state.chartVersion}`;
    if (key === state.chartKey) return;
    state.chartKey = key;
    const svg = $("chart-svg");
    const seconds = max + 1;
    const perColumn = Math.ceil(seconds / CHART_COLUMNS_MAX);
    const columns = Math.ceil(seconds / perColumn);
    const sums = Array.from({ length: columns }, () => names.map(() => 0));
    const add = (second, votes) => {
      const column = Math.floor(second / perColumn);
      if (column >= columns) return;
      votes.forEach((v, i) => { sums[column][i] += Math.max(0, v); });
    };
    points.forEach((point) => add(point.second, point.votes));
    state.liveTail.forEach((votes, second) => add(second, votes));
    const peak = Math.max(1, ...sums.map((c) => c.reduce((a, b) => a + b, 0)));
    const width = 1000 / columns;
    // Thin bars while the poll is young, so its first seconds do not look like slabs.
    const barWidth = Math.min(columns > 60 ? width : width * 0.85, CHART_BAR_WIDTH_MAX);
    const rects = [];
    sums.forEach((column, c) => {
      let y = 100;
      column.forEach((votes, i) => {
        if (votes <= 0) return;
        const height = (votes / peak) * 96;
        y -= height;
        const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
        rect.setAttribute("x", String(c * width + (width - barWidth) / 2));
        rect.setAttribute("y", String(y));
        rect.setAttribute("width", String(Math.max(0.5, barWidth)));
        rect.setAttribute("height", String(height));
        rect.setAttribute("fill", optionColor(names[i], i));
        rects.push(rect);
      });
    });
    if (rects.length === 0) {
      const line = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      line.setAttribute("x", "0");
      line.setAttribute("y", "99");
      line.setAttribute("width", "1000");
      line.setAttribute("height", "1");
      line.setAttribute("fill", "#26304d");
      rects.push(line);
    }
    svg.replaceChildren(...rects);
  }

  function wireTimeline() {
    const slider = $("slider");
    slider.addEventListener("input", () => select(Number(slider.value)));
    $("live-button").addEventListener("click", () => select(null));
    const chart = $("chart");
    const scrub = (event) => {
      if (slider.disabled) return;
      const box = chart.getBoundingClientRect();
      const share = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
      select(Math.floor(share * (state.maxSecond + 1)));
    };
    chart.addEventListener("pointerdown", (event) => {
      chart.setPointerCapture(event.pointerId);
      scrub(event);
    });
    chart.addEventListener("pointermove", (event) => {
      if (chart.hasPointerCapture(event.pointerId)) scrub(event);
    });
  }

  // ---- the clock tick -----------------------------------------------------------------------

  function tick() {
    if (state.latest) recordTotal(state.latest.total);
    if (historyRefreshDue() && historyIsStale()) refreshHistory();
    if (state.latest && state.info && state.latest.status !== state.info.status) refreshPolls();
    if (state.mode === "live" && performance.now() - conn.lastEventAt > LIVE_SILENCE_REOPEN_MS) {
      conn.lastEventAt = performance.now();
      openStream();
    }
    updateTimeline();
    render();
  }

  // ---- start-up -----------------------------------------------------------------------------

  async function boot() {
    wireTimeline();
    setMode("connecting");
    for (let attempt = 0; ; attempt += 1) {
      try {
        await loadPolls();
        break;
      } catch {
        setMode("offline");
        showMessage("Cannot reach the Tally node. Retrying…");
        await sleep(Math.min(1000 * 2 ** attempt, POLL_BACKOFF_MAX_MS));
      }
    }
    showMessage(null);
    const wanted = pollFromLocation();
    const first = state.polls.find((p) => p.status === "open") ?? state.polls[0];
    state.poll = wanted ?? first?.id ?? null;
    state.info = state.polls.find((p) => p.id === state.poll) ?? null;
    renderNav();
    if (!state.info) {
      $("dashboard").dataset.state = "empty";
      $("mode").hidden = true;
      $("poll-name").textContent = state.poll ?? "No polls yet";
      showMessage(state.poll
        ? `There is no poll named “${state.poll}” on this node.`
        : "This node has no polls yet. Create one with the admin API (POST /v1/admin/polls).");
      $("polls").hidden = state.polls.length === 0;
      return;
    }
    $("dashboard").dataset.state = "ready";
    $("poll-name").textContent = state.poll;
    document.title = `${state.poll} · Tally`;
    openStream();
    fetchJson(`${pollPath()}/results`).then(({ body }) => onResults(body), () => {});
    refreshHistory();
    updateTimeline();
    setInterval(tick, TICK_MS);
  }

  boot();
})();
