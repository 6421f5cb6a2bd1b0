// The Kinema web console: calls the JSON API of the server's own gRPC services
// (POST /api/<service>/<method>, proto3 JSON) with the API key as a Bearer header.
"use strict";

const KEY = "kinema.apiKey";
const $ = (id) => document.getElementById(id);
const JOBS = "kinema.v1.JobService";
const BILLING = "kinema.v1.BillingService";
const ADMIN = "kinema.v1.AdminService";

let caller = null;        // the logged-in key (AdminService.GetCallerKey)
let watching = null;      // AbortController of the job panel's event stream
let videoUrl = null;      // the blob: URL the video element plays

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function key() { return sessionStorage.getItem(KEY) || ""; }

function authHeaders() { return { "Authorization": `Bearer ${key()}` }; }

async function failure(res) {
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { body = { code: `HTTP ${res.status}`, message: text }; }
  return new ApiError(res.status, body);
}

async function call(method, request) {
  const res = await fetch(`/api/${method}`, {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify(request || {}),
  });
  if (!res.ok) throw await failure(res);
  return res.json();
}

// "NOT_FOUND (JOB_NOT_FOUND): no job … \n width: must be …"
function describe(err) {
  if (!(err instanceof ApiError)) return String(err);
  const b = err.body;
  let text = b.code || `HTTP ${err.status}`;
  if (b.reason) text += ` (${b.reason})`;
  if (b.message) text += `: ${b.message}`;
  for (const v of b.fieldViolations || []) text += `\n${v.field}: ${v.description}`;
  return text;
}

function show(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  return e;
}

function table(target, headers, rows) {
  target.replaceChildren();
  const head = el("tr");
  for (const h of headers) head.append(el("th", h));
  target.append(head);
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.append(c); else td.textContent = c ?? "";
      tr.append(td);
    }
    target.append(tr);
  }
}

const short = (name, prefix) => (name || `${prefix}UNSPECIFIED`).replace(prefix, "");
const time = (ts) => (ts ? new Date(ts).toLocaleString() : "");
const num = (v) => Number(v || 0);

// ---- log in / out --------------------------------------------------------------

function showOnly(ids) {
  for (const id of ["login", "account-view", "operator-view", "job-panel", "jobs-view"]) {
    $(id).hidden = !ids.includes(id);
  }
  $("logout").hidden = ids.includes("login");
  $("who").hidden = ids.includes("login");
}

async function login(secret) {
  sessionStorage.setItem(KEY, secret);
  try {
    caller = await call(`${ADMIN}/GetCallerKey`);
  } catch (err) {
    logout();
    show($("login-error"), describe(err));
    return;
  }
  show($("login-error"), "");
  const role = short(caller.role, "KEY_ROLE_");
  $("who").textContent = `${role.toLowerCase()} key ${caller.prefix || caller.id}` +
    (caller.accountId ? ` · account ${caller.accountId}` : "");
  if (caller.accountId) {
    showOnly(["account-view", "jobs-view"]);
    await Promise.all([loadModels(), loadBalance(), loadJobs()]);
  } else {
    showOnly(["operator-view"]);
    await Promise.all([loadWorkers(), loadQueue(), loadAccounts()]);
  }
}

function logout() {
  sessionStorage.removeItem(KEY);
  caller = null;
  stopWatching();
  showOnly(["login"]);
  $("api-key").value = "";
}

// ---- an account's screens ------------------------------------------------------

async function loadModels() {
  const { models = [] } = await call(`${JOBS}/ListModels`);
  const select = $("model");
  select.replaceChildren();
  // The smallest model first: the quickest to try.
  models.sort((a, b) => num(a.memoryBytes) - num(b.memoryBytes));
  for (const m of models) {
    const option = el("option", `${m.id} — ${m.description || m.family || ""}`);
    option.value = m.id;
    select.append(option);
  }
  const fill = () => {
    const m = models.find((x) => x.id === select.value);
    const d = (m && m.defaults) || {};
    $("width").value = d.width || "";
    $("height").value = d.height || "";
    $("frames").value = d.numFrames || "";
    $("steps").value = d.steps || "";
  };
  select.onchange = fill;
  fill();
}

async function loadBalance() {
  try {
    const b = await call(`${BILLING}/GetBalance`, {});
    $("balance").textContent =
      `${num(b.available)} credits available (${num(b.total)} in lots, ${num(b.held)} held)`;
  } catch (err) {
    $("balance").textContent = describe(err);
  }
}

async function loadJobs(accountId) {
  const request = { pageSize: 25 };
  if (accountId) request.accountId = accountId;
  const { jobs = [] } = await call(`${JOBS}/ListJobs`, request);
  table($("jobs"), ["Job", "Model", "State", "Progress", "Created", ""], jobs.map((j) => {
    const open = el("button", "Watch");
    open.type = "button";
    open.onclick = () => watch(j.id, j.accountId);
    return [j.id, j.model, short(j.state, "JOB_STATE_"), percent(j) + "%", time(j.createdAt), open];
  }));
  $("jobs-view").hidden = false;
}

async function submitJob(event) {
  event.preventDefault();
  show($("submit-error"), "");
  const request = { model: $("model").value, prompt: $("prompt").value };
  for (const [field, id] of [["width", "width"], ["height", "height"], ["numFrames", "frames"], ["steps", "steps"]]) {
    if ($(id).value !== "") request[field] = Number($(id).value);
  }
  let job;
  try {
    job = await call(`${JOBS}/CreateJob`, request);
  } catch (err) {
    show($("submit-error"), describe(err));
    return;
  }
  watch(job.id, job.accountId);
  loadBalance();
  loadJobs();
}

// ---- the job panel: live progress, then the video ------------------------------

// The server's whole-job fraction (1 once the job succeeded).
function percent(job) {
  const p = job.progress || {};
  return Math.floor(100 * (p.fraction || 0));
}

function render(job) {
  $("job-id").textContent = job.id;
  $("job-state").textContent = short(job.state, "JOB_STATE_");
  $("job-stage").textContent = short(job.stage, "JOB_STAGE_").toLowerCase().replaceAll("_", " ");
  const pct = percent(job);
  $("job-progress").value = pct;
  $("job-percent").textContent = `${pct}%`;
  if (job.failure) show($("job-error"), `${job.failure.code}: ${job.failure.message}`);
}

function stopWatching() {
  if (watching) watching.abort();
  watching = null;
  if (videoUrl) URL.revokeObjectURL(videoUrl);
  videoUrl = null;
  const video = $("job-video");
  video.hidden = true;
  video.removeAttribute("src");
}

async function watch(jobId, accountId) {
  stopWatching();
  const controller = new AbortController();
  watching = controller;
  $("job-panel").hidden = false;
  show($("job-error"), "");
  $("job-panel").dataset.done = "";
  let last = null;
  try {
    const res = await fetch(`/api/${JOBS}/WatchJob`, {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ jobId, accountId }),
      signal: controller.signal,
    });
    if (!res.ok) throw await failure(res);
    for await (const { event, data } of serverEvents(res.body)) {
      if (event === "job") {
        last = JSON.parse(data).job;
        render(last);
      } else if (event === "error") {
        throw new ApiError(0, JSON.parse(data));
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    show($("job-error"), describe(err));
    return;
  }
  $("job-panel").dataset.done = last ? last.state : "";
  if (last && last.state === "JOB_STATE_SUCCEEDED") await play(last);
  if (caller && caller.accountId) { loadBalance(); loadJobs(); }
}

// Parses a text/event-stream body into {event, data} records.
async function* serverEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

// The video element cannot send the key, so the bytes come with it into a blob: URL.
async function play(job) {
  const query = new URLSearchParams({ accountId: job.accountId, jobId: job.id, kind: "VIDEO" });
  try {
    const res = await fetch(`/api/${JOBS}/DownloadArtifact?${query}`, { headers: authHeaders() });
    if (!res.ok) throw await failure(res);
    const blob = await res.blob();
    if (watching === null) return;
    videoUrl = URL.createObjectURL(blob);
    const video = $("job-video");
    video.src = videoUrl;
    video.hidden = false;
    video.play().catch(() => {});
  } catch (err) {
    show($("job-error"), describe(err));
  }
}

// ---- an operator's screens -----------------------------------------------------

async function loadWorkers() {
  try {
    const { workers = [] } = await call(`${ADMIN}/ListWorkers`);
    const gib = (b) => (num(b) / 2 ** 30).toFixed(1) + " GiB";
    table($("workers"), ["Worker", "Device", "State", "Memory", "Models", "Running", "Done", "Heartbeat"],
      workers.map((w) => [
        w.owner,
        `${w.device} (${w.deviceModel || ""})`,
        short(w.state, "WORKER_STATE_"),
        `${gib(w.memoryBudgetBytes)} of ${gib(w.memoryTotalBytes)}`,
        (w.residentModels || []).map((m) => m.model).join(", "),
        (w.currentJobIds || []).join(", "),
        num(w.jobsDone),
        time(w.lastHeartbeat),
      ]));
  } catch (err) {
    table($("workers"), ["Workers"], [[describe(err)]]);
  }
}

function jobRows(jobs) {
  return jobs.map((j) => {
    const open = el("button", "Watch");
    open.type = "button";
    open.onclick = () => watch(j.id, j.accountId);
    const place = j.queuePosition !== undefined ? `#${j.queuePosition}` : "";
    return [j.id, j.accountId, j.model, short(j.state, "JOB_STATE_"), place, percent(j) + "%", time(j.createdAt), open];
  });
}

async function loadQueue() {
  try {
    const { jobs = [] } = await call(`${ADMIN}/ListQueue`, { pageSize: 100 });
    table($("queue"), ["Job", "Account", "Model", "State", "Place", "Progress", "Created", ""], jobRows(jobs));
  } catch (err) {
    table($("queue"), ["Queue"], [[describe(err)]]);
  }
}

let accountsToken = "";
let accountRows = [];

// Every account with its balance, 50 at a time ("More" appends the next page).
async function loadAccounts(more) {
  if (!more) { accountsToken = ""; accountRows = []; }
  try {
    const page = await call(`${ADMIN}/ListAccounts`, { pageSize: 50, pageToken: accountsToken });
    for (const { account = {}, balance = {} } of page.accounts || []) {
      const open = el("button", "Show");
      open.type = "button";
      open.onclick = () => { $("account-id").value = account.id; showAccount(); };
      accountRows.push([account.id, account.name, short(account.status, "ACCOUNT_STATUS_").toLowerCase(),
        num(balance.available), num(balance.held), time(account.createdAt), open]);
    }
    table($("accounts"), ["Account", "Name", "Status", "Available", "Held", "Created", ""], accountRows);
    accountsToken = page.nextPageToken || "";
    $("more-accounts").hidden = !accountsToken;
  } catch (err) {
    table($("accounts"), ["Accounts"], [[describe(err)]]);
  }
}

async function showAccount(event) {
  if (event) event.preventDefault();
  const accountId = $("account-id").value.trim();
  show($("account-error"), "");
  $("account-details").hidden = true;
  try {
    const [account, balance, ledger] = await Promise.all([
      call(`${ADMIN}/GetAccount`, { accountId }),
      call(`${BILLING}/GetBalance`, { accountId }),
      call(`${BILLING}/ListLedgerEntries`, { accountId, pageSize: 100 }),
    ]);
    $("account-summary").textContent =
      `${account.name || account.id}: ${short(account.status, "ACCOUNT_STATUS_").toLowerCase()}, ` +
      `${num(balance.available)} credits available (${num(balance.total)} in lots, ${num(balance.held)} held)`;
    table($("lots"), ["Lot", "Source", "Remaining", "Original", "Expires"],
      (balance.lots || []).map((l) => [l.id, l.source, num(l.remaining), num(l.original), time(l.expiresAt)]));
    table($("ledger"), ["Entry", "Kind", "Amount", "Balance after", "Held after", "Job", "Actor", "When"],
      (ledger.entries || []).map((e) => [e.id, short(e.kind, "LEDGER_ENTRY_KIND_").toLowerCase(), num(e.amount),
        num(e.balanceAfter), num(e.heldAfter), e.jobId, e.actor, time(e.createdAt)]));
    $("account-details").hidden = false;
    await loadJobs(accountId);
  } catch (err) {
    show($("account-error"), describe(err));
  }
}

// ---- wiring ----------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login($("api-key").value.trim());
  });
  $("logout").addEventListener("click", logout);
  $("submit-form").addEventListener("submit", submitJob);
  $("account-form").addEventListener("submit", showAccount);
  $("refresh-workers").addEventListener("click", loadWorkers);
  $("refresh-queue").addEventListener("click", loadQueue);
  $("refresh-accounts").addEventListener("click", () => loadAccounts(false));
  $("more-accounts").addEventListener("click", () => loadAccounts(true));
  $("refresh-jobs").addEventListener("click", () =>
    loadJobs(caller && caller.accountId ? undefined : $("account-id").value.trim()));
  if (key()) login(key()); else showOnly(["login"]);
});
