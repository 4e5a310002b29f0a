/**
 * The batch's report page as a browser shows it: a real batch (real Pulumi engine, moto S3, `--platform local`,
 * runtime none) of three subjects, one of which fails with hostile output, writes report.html; headless Chromium
 * renders it, and the numbers in its DOM are summary.json's. The page fetches nothing, and text from users and
 * containers stays text. A screenshot is kept for a person to look at.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { BatchEntry, BatchResult } from "../driver/batch";
import { binsOf } from "../driver/batch-report-chart";
import { renderBatchReport } from "../driver/batch-report";
import { batchTotals } from "../driver/batch-totals";
import { formatCost } from "../driver/summary";
import { DriverSandbox, batchResultOf, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";
import { chromiumBinary, dumpDom, screenshot } from "./support/chromium";

const SUBJECTS = ["NDARINV0000AAAA", "NDARINV0000BBBB", "NDARINV0000CCCC"];
const SCRIPT = `<script>document.title="pwned"</script>`;
const IMG = `"><img src=x onerror="document.title='pwned'">`;

/** The rows of the subjects table in a DOM, by subject: each data-field cell's data-value (or text) and its links. */
function rowsOf(dom: string): Map<string, { outcome: string; values: Record<string, string | undefined>; texts: Record<string, string>; links: Record<string, string> }> {
  const rows = new Map();
  for (const [, subject, outcome, body] of dom.matchAll(/<tr data-subject="([^"]*)" data-outcome="([^"]*)">([\s\S]*?)<\/tr>/g)) {
    const values: Record<string, string | undefined> = {};
    const texts: Record<string, string> = {};
    for (const [, field, value, text] of body.matchAll(/<td[^>]*data-field="([^"]+)"(?: data-value="([^"]*)")?[^>]*>([\s\S]*?)<\/td>/g)) {
      values[field] = value;
      texts[field] = text;
    }
    const links = Object.fromEntries([...body.matchAll(/<a href="([^"]*)" data-link="([^"]+)">/g)].map(([, href, kind]) => [kind, href]));
    rows.set(subject, { outcome, values, texts, links });
  }
  return rows;
}

const valueOf = (dom: string, id: string) => /data-value="([^"]*)"/.exec(new RegExp(`<dd id="${id}"[^>]*>`).exec(dom)?.[0] ?? "")?.[1];

/** The elements of serialized HTML with their attributes (every value double-quoted, as the page and Chromium write them). */
function elementsOf(html: string): Array<{ name: string; attrs: Record<string, string> }> {
  return [...html.matchAll(/<([a-zA-Z][\w-]*)((?:\s+[^\s=>/]+(?:="[^"]*")?)*)\s*\/?>/g)].map(([, name, attrs]) => ({
    name: name.toLowerCase(),
    attrs: Object.fromEntries([...attrs.matchAll(/\s+([^\s=>/]+)(?:="([^"]*)")?/g)].map(([, key, value]) => [key.toLowerCase(), value ?? ""])),
  }));
}

/** What would make a browser fetch or run something: none may be in the page. */
function expectNothingFetched(html: string, what: string): void {
  const elements = elementsOf(html);
  expect(elements.length, `${what}: parsed`).to.be.greaterThan(20);
  for (const { name, attrs } of elements) {
    expect(["script", "link", "img", "iframe", "object", "embed", "base", "image", "use"], `${what}: <${name}>`).to.not.include(name);
    expect(Object.keys(attrs).filter((a) => a === "src" || a === "srcset" || a === "xlink:href" || a.startsWith("on")), `${what}: attributes of <${name}>`).to.deep.equal([]);
    expect(attrs.style ?? "", `${what}: style of <${name}>`).to.not.match(/url\(/i);
    if (name === "meta") expect(attrs["http-equiv"] ?? "", what).to.not.match(/refresh/i);
    if (attrs.href !== undefined) expect(attrs.href, `${what}: a link`).to.satisfy((h: string) => h.startsWith("s3://") || !/^[a-z][a-z0-9+.-]*:/i.test(h));
  }
  for (const [, css] of html.matchAll(/<style>([\s\S]*?)<\/style>/g)) expect(css, `${what}: stylesheet`).to.not.match(/url\(|@import/i);
}

describe("batch report page (real batch on --platform local, headless Chromium)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let batch: BatchResult;
  let summary: BatchResult;
  let dom: string;

  before(async () => {
    chromiumBinary(); // a clear error first if the browser is missing
    sandbox = await startDriverSandbox({ CLOUDCOMPUTE_POLL_MS: "300" });
    await sandbox.seed(SUBJECTS);
    // BBBB's container fails, printing markup an adversary would: it reaches the job's message and so the page.
    const script = `case "$3" in *BBBB) printf '%s\\n' '${SCRIPT}' '${IMG.replace(/'/g, `'"'"'`)}' >&2; exit 3;; esac; cp "$1" "$2/"`;
    const config = sandbox.writeConfig("report.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", script, "sh", "{input}", "{output}", "{subject}"] }));
    const subjectsFile = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(subjectsFile, SUBJECTS.join("\n") + "\n");
    // The local platform has no price of its own: one per hour gives every job a cost to check.
    const res = await sandbox.run(["--config", config, "--subjects-file", subjectsFile, "--concurrency", "2", "--price-per-hour", "0.5", "--json"]);
    expect(res.code, res.stderr).to.equal(1);
    batch = batchResultOf(res.stdout);
    summary = JSON.parse(fs.readFileSync(batch.summaryPath, "utf8")) as BatchResult;
    expect(summary.reportPath, "summary.json names the report").to.equal(path.join(path.dirname(batch.summaryPath), "report.html"));
    dom = dumpDom(summary.reportPath!);
  });

  after(async () => {
    await sandbox?.stop();
  });

  it("the batch ran as set up: two successes with billed time and cost, one failure carrying hostile output", () => {
    expect(summary.entries.map((e) => [e.subject, e.outcome])).to.deep.equal([[SUBJECTS[0], "succeeded"], [SUBJECTS[1], "failed"], [SUBJECTS[2], "succeeded"]]);
    const failed = summary.entries[1];
    expect(failed.message).to.include(SCRIPT).and.include(IMG);
    expect(failed.resultsUrl, "a failed job has no results").to.equal(undefined);
    for (const e of [summary.entries[0], summary.entries[2]]) {
      expect(e.billedSeconds, `${e.subject} billed`).to.be.greaterThan(0);
      expect(e.costUsd, `${e.subject} cost`).to.be.greaterThan(0);
      expect(e.resultsUrl).to.equal(`s3://${sandbox.bucket}/results/${e.subject}/`);
      expect(e.logUrl).to.match(/^s3:\/\//);
    }
  });

  it("Chromium's DOM shows summary.json's numbers: per subject, totals and counts", () => {
    const rows = rowsOf(dom);
    expect([...rows.keys()]).to.deep.equal(SUBJECTS);
    for (const e of summary.entries) {
      const row = rows.get(e.subject)!;
      expect(row.outcome).to.equal(e.outcome);
      expect(row.texts.status).to.equal(e.outcome);
      expect(row.texts.reason.startsWith(e.reason ?? ""), `${e.subject} reason`).to.equal(true);
      expect(Number(row.values["wall-seconds"]), `${e.subject} wall seconds`).to.equal(e.seconds);
      expect(Number(row.values["billed-seconds"]), `${e.subject} billed seconds`).to.equal(e.billedSeconds);
      expect(Number(row.values.cost), `${e.subject} cost`).to.equal(e.costUsd);
      expect(row.texts.cost, `${e.subject} cost as the CLI prints it`).to.equal(formatCost(e.costUsd));
      expect(row.links.log).to.equal(e.logUrl);
      // The batch's own log of the subject, linked beside the page, and there.
      expect(row.links["batch-log"]).to.equal(`${e.subject}.log`);
      expect(fs.existsSync(path.join(path.dirname(summary.reportPath!), row.links["batch-log"]))).to.equal(true);
      if (e.outcome === "succeeded") expect(row.links.results).to.equal(e.resultsUrl);
      else expect(row.links.results, "a failed job's results folder is not linked").to.equal(undefined);
    }
    const sum = (of: (e: BatchEntry) => number | undefined) => summary.entries.reduce((s, e) => s + (of(e) ?? 0), 0);
    expect(Number(valueOf(dom, "total-cost"))).to.be.closeTo(sum((e) => e.costUsd), 1e-4).and.equal(batchTotals(summary.entries).costUsd);
    expect(Number(valueOf(dom, "total-billed-seconds"))).to.be.closeTo(sum((e) => e.billedSeconds), 1e-3).and.equal(batchTotals(summary.entries).billedSeconds);
    expect(Number(valueOf(dom, "subject-count"))).to.equal(3);
    const wall = (Date.parse(summary.endedAt!) - Date.parse(summary.startedAt!)) / 1000;
    expect(Number(valueOf(dom, "batch-wall-seconds"))).to.equal(Math.round(wall));
    const counts = Object.fromEntries([...dom.matchAll(/data-outcome="([^"]+)" data-count="(\d+)"/g)].map(([, o, n]) => [o, Number(n)]));
    expect(counts).to.deep.equal({ succeeded: 2, failed: 1 });
    // Every cost traceable: the entries and the page name the type and the price, with its source and date.
    for (const e of summary.entries) expect(e.price, `${e.subject} price`).to.include({ usdPerHour: 0.5, source: "--price-per-hour" });
    expect(/<dd id="prices">([\s\S]*?)<\/dd>/.exec(dom)?.[1]).to.match(/\S+ at \$0\.5\/h \(--price-per-hour, \d{4}-\d\d-\d\d\)/);
    // Spot figures appear only when entries carry them; these do not.
    expect(dom).to.not.include('id="spot-saved"').and.not.include('id="interruption-cost"');
    // Both charts drew a bar per subject that had a value.
    for (const chart of ["wall-seconds", "cost"]) {
      const svg = new RegExp(`<svg[^>]*data-chart="${chart}"[\\s\\S]*?</svg>`).exec(dom)?.[0] ?? "";
      expect([...svg.matchAll(/data-count="(\d+)"/g)].reduce((s, [, n]) => s + Number(n), 0), `${chart} histogram`).to.equal(3);
    }
  });

  it("loads nothing from the network: no script, stylesheet link, image, url() or @import; links are s3:// or beside the page", () => {
    const html = fs.readFileSync(summary.reportPath!, "utf8");
    expectNothingFetched(html, "report.html");
    expectNothingFetched(dom, "Chromium's DOM");
    expect(html).to.include(`http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"`);
  });

  it("the container's hostile output renders as text (no element injected, no script ran)", () => {
    const failed = rowsOf(dom).get(SUBJECTS[1])!;
    expect(failed.texts.reason).to.include("&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;").and.include("&lt;img src=x onerror=");
    expect(elementsOf(dom).map((e) => e.name)).to.not.include.members(["script", "img"]);
    expect(/<title>([^<]*)<\/title>/.exec(dom)?.[1]).to.equal(`Batch ${summary.batchId}`);
  });

  it("hostile subject names, reasons, messages and URLs stay text in Chromium", () => {
    const hostile = [`${SCRIPT}`, IMG, `a" onmouseover="document.title='pwned'`, `</td></tr></table><h1 id="injected">x</h1>`];
    const entries: BatchEntry[] = hostile.map((subject, i) => ({
      subject, outcome: i === 0 ? "succeeded" : "failed", exitCode: i === 0 ? 0 : 1, reason: hostile[(i + 1) % hostile.length], message: hostile[(i + 2) % hostile.length],
      resultsUrl: ["javascript:document.title='pwned'", " javascript:document.title='pwned'", "\tjavascript:x", "data:text/html,x"][i], logUrl: `s3://b/${IMG}`, seconds: 61, billedSeconds: 61, costUsd: 0.002,
    }));
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "cc-report-hostile-")), "report.html");
    fs.writeFileSync(file, renderBatchReport({ batchId: `batch-${IMG}`, entries, exitCode: 1, summaryPath: path.join(path.dirname(file), "summary.json") }));
    const hostileDom = dumpDom(file);
    // Only the page's own elements: no script, image or heading from the names, no event handler attribute.
    const elements = elementsOf(hostileDom);
    expect(elements.map((e) => e.name)).to.not.include.members(["script", "img"]);
    expect(elements.filter((e) => e.name === "h1").length).to.equal(1);
    expect(elements.flatMap((e) => Object.keys(e.attrs)).filter((a) => a.startsWith("on"))).to.deep.equal([]);
    // Whitespace before a scheme is stripped by browsers: padded javascript: and data: URLs are text too.
    expect(elements.filter((e) => e.attrs.href !== undefined && !e.attrs.href.startsWith("s3://"))).to.deep.equal([]);
    expectNothingFetched(hostileDom, "hostile page");
    expect(elements.filter((e) => e.name === "tr" && e.attrs["data-subject"] !== undefined).map((e) => e.attrs["data-subject"].replace(/&quot;/g, '"').replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"))).to.deep.equal(hostile);
    expect(/<title>([^<]*)<\/title>/.exec(hostileDom)?.[1]).to.equal("Batch batch-\"&gt;&lt;img src=x onerror=\"document.title='pwned'\"&gt;");
    expect([...rowsOf(hostileDom).values()].map((r) => r.texts.status)).to.deep.equal(["succeeded", "failed", "failed", "failed"]);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });

  it("a study's thousands of skipped subjects are counted, not listed; spot figures show when entries carry them", () => {
    const skipped: BatchEntry[] = Array.from({ length: 300 }, (_, i) => ({ subject: `sub-${i}`, outcome: "skipped", exitCode: 0, succeededBefore: `job-sub-${i}-x` }));
    const ran: BatchEntry = { subject: "sub-run", jobId: "job-sub-run-x", outcome: "succeeded", exitCode: 0, costUsd: 0.05, billedSeconds: 600, seconds: 640, spotSavedUsd: 0.1, interruptionCostUsd: 0.01 };
    const html = renderBatchReport({ batchId: "b", entries: [...skipped, ran], exitCode: 0, summaryPath: "/tmp/b/summary.json" });
    expect([...html.matchAll(/<tr data-subject=/g)].length).to.equal(1);
    expect(html).to.include('data-outcome="skipped" data-count="300"').and.include("300 subjects skipped");
    expect(html).to.match(/id="spot-saved" data-value="0.1">\$0.10</).and.match(/id="interruption-cost" data-value="0.01">\$0.01</);
    // A retried subject whose last attempt's cost is unknown: the total is a lower bound, and says so; the net shows.
    const partial = renderBatchReport({ batchId: "b", entries: [ran, { ...ran, subject: "sub-partial", costIncomplete: true, spotNetSavedUsd: -0.02 }], exitCode: 0, summaryPath: "/tmp/b/summary.json" });
    expect(partial).to.match(/id="total-cost" data-value="0.1">at least \$0.10 \(1 subject\(s\)&#39; cost unknown\)</);
    expect(partial).to.match(/id="spot-net-saved" data-value="-0.02">\$0.02 lost</);
    // A study's worth of values draws (no spread of hundreds of thousands of arguments).
    expect(binsOf(Array.from({ length: 300_000 }, (_, i) => i % 977)).reduce((n, b) => n + b.count, 0)).to.equal(300_000);
    const few = renderBatchReport({ batchId: "b", entries: [...skipped.slice(0, 3), ran], exitCode: 0, summaryPath: "/tmp/b/summary.json" });
    expect([...few.matchAll(/<tr data-subject=/g)].length, "a few skipped subjects are listed").to.equal(4);
  });

  it("a screenshot renders (kept for a person to look at)", () => {
    const png = path.join(os.tmpdir(), "cloudcompute-report-screenshot.png");
    fs.rmSync(png, { force: true });
    screenshot(summary.reportPath!, png);
    const bytes = fs.readFileSync(png);
    expect(bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), "PNG signature").to.equal(true);
    expect(bytes.length, "a page, not a blank").to.be.greaterThan(20_000);
    console.log(`      screenshot: ${png}`);
  });
});
