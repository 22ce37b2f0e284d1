// The console's composition root: finds the page's elements and wires session, browser, query,
// live mode and tokens together.
import { Api } from "./api.js";
import { Browser } from "./browser.js";
import { Chart } from "./chart.js";
import { LiveFeed } from "./live.js";
import { parseSelector, withMatcher } from "./selector.js";
import { Session } from "./session.js";
import { TokenPanel } from "./tokens.js";

const RENEW_MARGIN_MS = 120_000; // renew a password session's access token this long before it ends
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
const POINTS_PER_SERIES = 300;

const $ = (selector) => document.querySelector(selector);
const session = new Session();
const api = new Api(session);

function say(element, text, isError) {
  element.textContent = text;
  element.classList.toggle("error", Boolean(isError));
}
const status = (text, isError) => say($("#status"), text, isError);
const tokenStatus = (text, isError) => say($("#tokens-status"), text, isError);

/** Run an event handler, showing its failure on `report` instead of leaving it in the console. */
function guarded(report, handler) {
  return async (event) => {
    if (event && event.type === "submit") event.preventDefault();
    try {
      await handler(event);
    } catch (error) {
      report(error.message || String(error), true);
    }
  };
}

const chart = new Chart($("#chart"), $("#series-table tbody"));
const browser = new Browser(
  api,
  { names: $("#metric-names"), count: $("#series-count"), labels: $("#label-name"), values: $("#label-values") },
  (label, value) => {
    const next = withMatcher($("#query").value, browser.metric, label, value);
    if (next === null) status("the query is not a plain selector: add the matcher by hand", true);
    else $("#query").value = next;
  },
);
const tokens = new TokenPanel(api, { body: $("#tokens-table tbody"), secretBox: $("#new-secret"), secret: $("#secret") }, tokenStatus);
const live = new LiveFeed(
  () => session.token,
  (points) => {
    chart.append(points, rangeSeconds());
    status(`live: ${chart.series.size} series, ${chart.pointCount} points`, false);
  },
  (text, isError) => {
    status(text, isError);
    if (isError) {
      $("#live").checked = false;
      live.stop();
    }
  },
);

function rangeSeconds() {
  const [start, end] = timeRange();
  return end - start;
}

function timeRange() {
  const choice = $("#range").value;
  if (choice !== "custom") {
    const end = Math.floor(Date.now() / 1000);
    return [end - Number(choice), end];
  }
  const start = Date.parse($("#from").value) / 1000;
  const end = Date.parse($("#to").value) / 1000;
  if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start) throw new Error("custom range: From must be before To");
  return [Math.floor(start), Math.floor(end)];
}

function stepFor(seconds) {
  return STEPS.find((step) => seconds / step <= POINTS_PER_SERIES) || STEPS[STEPS.length - 1];
}

async function runQuery() {
  const query = $("#query").value.trim();
  if (!query) throw new Error("enter a query, or pick a metric");
  const [start, end] = timeRange();
  const form = { query, start: String(start), end: String(end), step: String(stepFor(end - start)) };
  status("running…", false);
  const data = await api.prometheus("POST", "/api/v1/query_range", { form });
  if (data.resultType !== "matrix") throw new Error(`unexpected result type ${data.resultType}`);
  const selector = parseSelector(query);
  chart.show(data.result, selector ? selector.metric : "", start, end);
  status(`${chart.series.size} series, ${chart.pointCount} points (step ${form.step}s)`, false);
}

async function toggleLive() {
  if (!$("#live").checked) {
    live.stop();
    status("live mode off", false);
    return;
  }
  if ($("#range").value === "custom") $("#range").value = "900";
  $("#range").dispatchEvent(new Event("change"));
  try {
    await runQuery();
  } catch (error) {
    $("#live").checked = false;
    throw error;
  }
  // a series selector such as cpu{host=~"web.*"}: the gateway refuses anything else with a message
  live.start($("#query").value.trim());
}

function showView(name) {
  for (const view of ["login", "explore", "tokens"]) $(`#${view}-view`).hidden = view !== name;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  $("#tabs").hidden = name === "login";
  $("#logout").hidden = name === "login";
}

/** Renew a password session's access token before it ends; false when that failed (signed out). */
async function keepFresh() {
  if (!session.expiresWithin(RENEW_MARGIN_MS) || (await session.refresh())) return true;
  session.expired();
  return false;
}

async function enter() {
  if (!(await keepFresh())) return;
  showView("explore");
  status("", false);
  await browser.loadMetrics();
}

function signedOut(message) {
  live.stop();
  $("#live").checked = false;
  tokens.forget();
  showView("login");
  say($("#login-error"), message, Boolean(message));
}
session.onRefreshed = () => live.reauth();
window.setInterval(guarded(status, keepFresh), 30_000);
session.onExpired = () => signedOut("The session expired or the token was refused: sign in again.");

const loginError = (text) => say($("#login-error"), text, true);

$("#password-form").addEventListener(
  "submit",
  guarded(loginError, async (event) => {
    const form = new FormData(event.target);
    await session.loginWithPassword(form.get("tenant"), form.get("email"), form.get("password"));
    event.target.reset();
    await enter();
  }),
);
$("#token-form").addEventListener(
  "submit",
  guarded(loginError, async (event) => {
    session.useToken(String(new FormData(event.target).get("token")).trim());
    event.target.reset();
    await enter();
  }),
);
$("#logout").addEventListener(
  "click",
  guarded(loginError, async () => {
    await session.logout();
    signedOut("");
  }),
);
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener(
    "click",
    guarded(status, async () => {
      showView(tab.dataset.tab);
      if (tab.dataset.tab === "tokens") await tokens.load();
    }),
  );
}
$("#metric").addEventListener(
  "change",
  guarded(status, async () => {
    const metric = $("#metric").value.trim();
    if (!metric || metric === browser.metric) return;
    $("#query").value = metric;
    await browser.selectMetric(metric);
  }),
);
$("#metric").addEventListener("focus", guarded(status, () => browser.loadMetrics()));
$("#label-name").addEventListener("change", guarded(status, () => browser.selectLabel($("#label-name").value)));
$("#range").addEventListener("change", () => {
  for (const field of document.querySelectorAll(".custom")) field.hidden = $("#range").value !== "custom";
});
$("#query-form").addEventListener(
  "submit",
  guarded(status, async () => {
    if (live.running) {
      live.stop();
      $("#live").checked = false;
    }
    await runQuery();
  }),
);
$("#live").addEventListener("change", guarded(status, toggleLive));
$("#token-create").addEventListener(
  "submit",
  guarded(tokenStatus, async (event) => {
    await tokens.create(event.target);
    event.target.reset();
  }),
);

if (session.signedIn) guarded(loginError, enter)();
else showView("login");
