// The voting page (/vote/{poll}): one large button per option; a tap casts one vote through
// the browser client (/client.js: one vote ID, retries, regional failover), shows "counted" or
// "already counted", then follows the live split. Regions come from the page's
// tally-endpoints meta tag (the node's `public_endpoints`), with this node itself last.
import { createClient } from "/client.js";

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
  bars.replaceChildren(...results.options.map((option) => {
    const row = document.createElement("li");
    row.dataset.option = option.name;
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = `${option.name}: ${(option.share * 100).toFixed(1)}% (${option.votes.toLocaleString()})`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(option.share * 100).toFixed(1)}%`;
    row.append(label, bar);
    return row;
  }));
  byId("total").textContent = `${results.total.toLocaleString()} votes`;
}

async function cast(option, buttons) {
  buttons.forEach((button) => { button.disabled = true; });
  say("sending", "Sending your vote…");
  try {
    const receipt = await tally.vote(poll, option);
    say(receipt.counted ? "counted" : "duplicate",
      receipt.counted ? `Counted: ${option}` : `Already counted: ${option}`);
    document.body.dataset.votedVia = receipt.endpoint;
    tally.live(poll, (results) => showSplit(results));
  } catch (error) {
    say("error", error.mayHaveBeenCounted
      ? "We could not confirm your vote. It may have been counted; try again to check."
      : `Not counted: ${error.message}`);
    buttons.forEach((button) => { button.disabled = false; });
  }
}

async function start() {
  try {
    const results = await tally.results(poll);
    byId("question").textContent = results.status === "open" ? `Vote: ${poll}` : `${poll} (${results.status.replace("_", " ")})`;
    const buttons = results.options.map((option) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = option.name;
      button.dataset.option = option.name;
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
