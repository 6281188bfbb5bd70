// The voting page (/vote/{poll}): one large button per option; a tap casts one vote through
// the browser client (/client.js: one vote ID, retries, regional failover), shows "counted" or
// "already counted", then follows the live split. Regions come from the page's
// tally-endpoints meta tag (the node's `public_endpoints`), with this node itself last.
import { createClient, optionColor, textColorOn } from "/client.js";

const poll = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const configured = JSON.parse(document.querySelector('meta[name="tally-endpoints"]').content || "[]");
const endpoints = [...configured.filter((url) => url !== location.origin), location.origin];
const tally = createClient({ endpoints });
const byId = (id) => document.getElementById(id);

function say(state, text) {
  const status = byId("status");
  status.dataset.state = state;
  status.textContent = text;
}

function showSplit(results) {
  byId("split").hidden = false;
  const bars = byId("bars");
  bars.replaceChildren(...results.options.map((option, index) => {
    const row = document.createElement("li");
    row.dataset.option = option.name;
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = `${option.name}: ${(option.share * 100).toFixed(1)}% (${option.votes.toLocaleString()})`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(option.share * 100).toFixed(1)}%`;
    bar.style.background = optionColor(option.name, index);
    row.append(label, bar);
    return row;
  }));
  byId("total").textContent = `${results.total.toLocaleString()} votes`;
}

// An edge's word that the split is old (its nodes are silent) or updates slowly (it sheds
// load): the split stays, with its time.
function showStaleness(stale) {
  const notice = byId("stale");
  notice.hidden = !stale;
  notice.dataset.stale = stale ? stale.reason : "";
  if (!stale) return;
  const asOf = stale.as_of_ms ? new Date(stale.as_of_ms).toLocaleTimeString() : "earlier";
  notice.textContent = stale.reason === "upstream"
    ? `Results as of ${asOf}: live updates are delayed.`
    : `Results as of ${asOf}: updates are slowed while voting is busy.`;
}

// A vote whose fate is unknown (an answer was lost): the next tap sends it again with the
// same vote ID and option, so it ends `counted` or `duplicate` and never counts twice.
let unsettled = null;

async function cast(tapped, buttons) {
  const option = unsettled ? unsettled.option : tapped;
  buttons.forEach((button) => { button.disabled = true; });
  say("sending", "Sending your vote…");
  try {
    const receipt = unsettled
      ? await tally.voteWithId(poll, option, unsettled.voteId)
      : await tally.vote(poll, option);
    unsettled = null;
    say(receipt.counted ? "counted" : "duplicate",
      receipt.counted ? `Counted: ${option}` : `Already counted: ${option}`);
    document.body.dataset.votedVia = receipt.endpoint;
    tally.live(poll, (results) => showSplit(results), showStaleness);
  } catch (error) {
    unsettled = error.mayHaveBeenCounted && error.voteId ? { option, voteId: error.voteId } : null;
    say("error", error.mayHaveBeenCounted
      ? `We could not confirm your vote for ${option}. It may have been counted; tap again to check (it will not count twice).`
      : `Not counted: ${error.message}`);
    buttons.forEach((button) => { button.disabled = false; });
  }
}

async function start() {
  try {
    const results = await tally.results(poll);
    byId("question").textContent = results.status === "open" ? `Vote: ${poll}` : `${poll} (${results.status.replace("_", " ")})`;
    const buttons = results.options.map((option, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = option.name;
      button.dataset.option = option.name;
      const color = optionColor(option.name, index);
      button.style.background = color;
      button.style.color = textColorOn(color);
      return button;
    });
    buttons.forEach((button) => button.addEventListener("click", () => cast(button.dataset.option, buttons)));
    byId("choices").replaceChildren(...buttons);
  } catch (error) {
    byId("question").textContent = "This poll cannot be loaded right now.";
    say("error", error.message);
  }
}

start();
