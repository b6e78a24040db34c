// End-to-end test of the dashboard in headless Chromium (Debian's /usr/bin/chromium),
// driven by playwright-core. Run by crates/pharos/tests/dashboard.rs, which starts the
// server and passes what it made in the environment:
//   PHAROS_URL, TOKEN_A, TOKEN_B (two tenants), JOB_A (a running job of tenant a),
//   JOB_B (tenant b's), SERVICE (tenant a's), RESULTS (a results.json), SHOTS (a
//   directory for the screenshots).
// Exits non-zero with the reason on the first failed check.
// With BENCH=1 it only measures page loads (see benches/dashboard/page_load.sh).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = process.env;
const url = env.PHAROS_URL;
const shots = env.SHOTS;
if (shots) { mkdirSync(shots, { recursive: true }); }

function check(cond, what) {
  if (!cond) { throw new Error(`check failed: ${what}`); }
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on("pageerror", e => { console.log(`page error: ${e.message}`); process.exitCode = 1; });

async function readyAs(name, timeout = 15000) {
  await page.waitForSelector(`body[data-ready="${name}"]`, { timeout });
}
async function go(hash, name) {
  await page.evaluate(h => { location.hash = h; }, hash);
  await readyAs(name);
}
async function shot(file) {
  if (shots) { await page.screenshot({ path: join(shots, file), fullPage: true }); }
}
async function login(token, expect = "cluster") {
  await page.goto(`${url}/ui/`);
  await readyAs("login");
  await page.fill("#token", token);
  await page.click("#login-button");
  await readyAs(expect);
}

try {
  if (env.BENCH) {
    // Page loads with many jobs and services: from navigation to the page drawn.
    const out = {};
    await login(env.TOKEN_A);
    for (const [hash, name] of [["#/jobs", "jobs"], ["#/services", "services"], ["#/cluster", "cluster"]]) {
      const times = [];
      for (let i = 0; i < 5; i++) {
        // A full load each time: HTML, script, styles, the API calls, the drawing.
        await page.goto("about:blank");
        const t0 = Date.now();
        await page.goto(`${url}/ui/${hash}`);
        await readyAs(name, 30000);
        times.push(Date.now() - t0);
      }
      const rows = await page.$$eval("tbody tr", r => r.length);
      out[name] = { ms: times, rows };
    }
    console.log(JSON.stringify(out));
  } else {
    // A wrong token is refused on the login page.
    await page.goto(`${url}/ui/`);
    await readyAs("login");
    await page.fill("#token", "not-a-token");
    await page.click("#login-button");
    await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0);
    check(await page.isVisible("#login"), "a refused token stays on the login page");

    // Tenant a.
    await login(env.TOKEN_A);
    check(await page.isVisible("#nav"), "logged in with a token");
    await page.waitForFunction(() => document.querySelector('[data-chart="cluster"]') !== null);
    await shot("cluster.png");

    await go("#/jobs", "jobs");
    const ids = await page.$$eval("#jobs tbody tr[data-id]", rows => rows.map(r => r.dataset.id));
    check(ids.includes(env.JOB_A), `tenant a sees its job ${env.JOB_A}`);
    check(!ids.includes(env.JOB_B), `tenant a does not see tenant b's job ${env.JOB_B}`);
    await shot("jobs.png");

    // The running job's logs update while the page is open.
    await go(`#/jobs/${env.JOB_A}`, "job");
    const lines = async () => Number(await page.getAttribute("#logs", "data-lines"));
    const before = await lines();
    await page.waitForFunction(n => Number(document.querySelector("#logs").dataset.lines) > n, before, { timeout: 20000 });
    check((await lines()) > before, `the logs grew while watched (${before} -> ${await lines()} lines)`);
    check((await page.textContent("#state")) === "PROCESSING", "the job is PROCESSING");
    await page.waitForSelector('[data-chart="metric-loss"]', { timeout: 15000 });
    check(true, "the job's loss is charted");
    await shot("job.png");
    await page.click("#halt");
    await page.waitForFunction(() => document.querySelector("#state").textContent === "HALTED", null, { timeout: 40000 });
    check(true, "halted from the page: HALTED");
    await shot("job-halted.png");

    // Another tenant's job, by its address: not found.
    await go(`#/jobs/${env.JOB_B}`, "error");
    const text = await page.textContent("#main");
    check(/not found|no job|404/i.test(text), `tenant b's job page is refused to tenant a ("${text.trim()}")`);

    // A service page with its replica chart.
    await go("#/services", "services");
    const names = await page.$$eval("#services tbody tr[data-name]", rows => rows.map(r => r.dataset.name));
    check(names.includes(env.SERVICE), `the services list shows ${env.SERVICE}`);
    const state = await page.textContent(`#services tbody tr[data-name="${env.SERVICE}"] td.state`);
    check(["Ready", "Starting", "Waiting"].includes(state.trim()), `the services list says its state ("${state}")`);
    await go(`#/services/${env.SERVICE}`, "service");
    const conds = await page.$$eval("#conditions tbody tr[data-condition]", r => r.map(x => x.dataset.condition));
    check(conds.includes("Ready"), `the service page lists its conditions (${conds})`);
    const points = Number(await page.getAttribute('[data-chart="replicas"]', "data-points"));
    check(points >= 2, `the replica chart has ${points} samples`);
    check(await page.$('[data-chart="replicas"] canvas') !== null, "the replica chart is drawn");
    check(await page.$('[data-chart="forecast"] canvas') !== null, "the load and forecast chart is drawn");
    const reasons = await page.textContent("#decisions tbody");
    check(/forecast quantile .*predicted latency: /.test(reasons), "the policy's decisions are explained (quantile, predicted latency per replica count)");
    await shot("service.png");

    // A simulation result, opened from a file.
    await go("#/results", "results");
    await page.setInputFiles("#results-file", env.RESULTS);
    await readyAs("results-shown");
    const runs = await page.$$eval("#runs tbody tr", r => r.length);
    check(runs > 0, `the result's table has ${runs} rows`);
    check(await page.$('[data-chart="violations"] canvas') !== null, "the result's plot is drawn");
    await shot("results.png");
    // The other kinds of results: training schedulers, function graphs; and a file that
    // is not one says so.
    for (const [file, what] of [[env.RESULTS_TRAINING, "training"], [env.RESULTS_GRAPHS, "graphs"], [null, "no"]]) {
      // Away and back: a fresh results page.
      await go("#/jobs", "jobs");
      await go("#/results", "results");
      if (!file) { break; }
      await page.setInputFiles("#results-file", file);
      await readyAs("results-shown");
      const n = await page.$$eval("#runs tbody tr", r => r.length);
      check(n > 0, `a ${what} result shows ${n} rows`);
      await shot(`results-${what}.png`);
    }
    await page.setInputFiles("#results-file", { name: "x.json", mimeType: "application/json", buffer: Buffer.from("{\"a\": 1}") });
    await page.waitForFunction(() => document.querySelector("#results-error").textContent.length > 0);
    check(/not a results file/.test(await page.textContent("#results-error")), "a file that is not a result is refused with a message");

    // The graphs page lists tenant a's graph with its function.
    await go("#/graphs", "graphs");
    const graphNames = await page.$$eval("section.graph[data-name]", s => s.map(x => x.dataset.name));
    check(graphNames.includes(env.GRAPH), `the graphs page shows ${env.GRAPH}`);
    const fns = await page.$$eval("section.graph tr[data-function]", rows => rows.map(r => r.dataset.function));
    check(fns.includes("only"), "the graph's functions are listed");
    const graphConds = await page.$$eval("section.graph table.conditions tr[data-condition]", r => r.map(x => x.dataset.condition));
    check(graphConds.includes("Ready"), `the graph's conditions are listed (${graphConds})`);
    await shot("graphs.png");

    // Tenant b sees its job and not a's, nor a's service.
    await page.click("#logout");
    await readyAs("login");
    await login(env.TOKEN_B);
    await go("#/jobs", "jobs");
    const idsB = await page.$$eval("#jobs tbody tr[data-id]", rows => rows.map(r => r.dataset.id));
    check(idsB.includes(env.JOB_B) && !idsB.includes(env.JOB_A), "tenant b sees only its own job");
    await go("#/services", "services");
    const namesB = await page.$$eval("#services tbody tr[data-name]", rows => rows.map(r => r.dataset.name));
    check(!namesB.includes(env.SERVICE), "tenant b does not see tenant a's service");
    await go("#/graphs", "graphs");
    const graphsB = await page.$$eval("section.graph[data-name]", s => s.map(x => x.dataset.name));
    check(!graphsB.includes(env.GRAPH), "tenant b does not see tenant a's graph");
  }
} catch (e) {
  console.log(`FAILED: ${e.message}`);
  if (shots) { await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {}); }
  process.exitCode = 1;
} finally {
  await browser.close();
}
