/**
 * `--instance-type auto --time-budget MINUTES` and the dry run's estimate from a comparison (issue #11): the pick
 * (cheapest within the budget, never a failed type, ties), every refusal with its exit 2, which comparison counts
 * (newest, same image and command, platform and region), crafted and corrupt comparison files passed over, and the
 * estimate from measured seconds versus --expected-minutes. Comparisons are written here in job/comparison.ts's shape,
 * as `run --compare` saves them; the CLI runs for real (`--dry-run` on the local platform creates nothing).
 */
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { COMPARISON_KIND, COMPARISON_VERSION, comparisonKey, type Comparison, type ComparedType } from "../job/comparison";
import { latestComparison, listComparisons } from "../driver/comparisons";
import { autoBudget, chooseInstanceType, resolveAutoInstanceType } from "../driver/instance-type-auto";
import { withChosenType } from "../driver/batch-command";
import { specFromConfig, ConfigError } from "../job/config";
import { refusal, saveComparison } from "./support/comparisons";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";

const IMAGE = "none";
const COMMAND = ["true"];
const KEY = comparisonKey(IMAGE, COMMAND);
const SUBJECTS = ["NDARINV0000AAAA", "NDARINV0000BBBB"];
const lastJson = (stdout: string) => JSON.parse(stdout.trim().split("\n").pop()!);

/** One type's measured run: succeeded unless said, billed as measured. */
function measured(instanceType: string, wallMinutes: number, costPerSubjectUsd: number, more: Partial<ComparedType> = {}): ComparedType {
  const seconds = Math.round(wallMinutes * 60);
  return { instanceType, jobId: `job-${instanceType}`, outcome: "succeeded", wallSeconds: seconds, phases: { driver: { total: seconds }, agent: {} }, instanceSeconds: seconds - 30, billedSeconds: seconds - 30, onDemandUsd: costPerSubjectUsd, costPerSubjectUsd, ...more };
}

function comparison(id: string, createdAt: string, types: ComparedType[], more: Partial<Comparison> = {}): Comparison {
  const image = more.image ?? IMAGE;
  const command = more.command ?? COMMAND;
  return { kind: COMPARISON_KIND, version: COMPARISON_VERSION, comparisonId: id, createdAt, key: comparisonKey(image, command), image, command, subject: SUBJECTS[0], platform: "local", region: "us-east-1", subjects: 100, concurrency: 4, types, ...more };
}

describe("--instance-type auto: the pick", () => {
  const types = [
    measured("t3.large", 95, 0.08), // cheapest overall, too slow for 60 min
    measured("m5.large", 50, 0.09),
    measured("c5.xlarge", 30, 0.11),
    measured("m5.xlarge", 20, 0.05, { outcome: "failed", reason: "exit 137" }), // cheapest and fast, but failed
  ];

  it("takes the cheapest type within the budget, not the cheapest overall when it is too slow, never a failed one", () => {
    const choice = chooseInstanceType(comparison("cmp-1", "2026-11-20T10:00:00.000Z", types), 60);
    expect(choice).to.deep.equal({ comparisonId: "cmp-1", createdAt: "2026-11-20T10:00:00.000Z", chosen: "m5.large", costPerSubjectUsd: 0.09, costBasis: "on-demand", wallSeconds: 3000, budgetMinutes: 60 });
    expect(chooseInstanceType(comparison("cmp-1", "2026-11-20T10:00:00.000Z", types), 100).chosen).to.equal("t3.large");
    expect(chooseInstanceType(comparison("cmp-1", "2026-11-20T10:00:00.000Z", types), 40).chosen).to.equal("c5.xlarge");
  });

  it("of equal costs takes the faster, and of equal cost and time the first by name", () => {
    const tied = [measured("m5.large", 40, 0.1), measured("c5.large", 30, 0.1), measured("a1.large", 30, 0.1)];
    expect(chooseInstanceType(comparison("t", "2026-11-20T10:00:00Z", tied), 60).chosen).to.equal("a1.large");
    expect(chooseInstanceType(comparison("t", "2026-11-20T10:00:00Z", tied.slice(0, 2)), 60).chosen).to.equal("c5.large");
  });

  it("none within the budget: every type's wall time, the failed ones, and the fastest, with the budget it would need", () => {
    const message = refusal(() => chooseInstanceType(comparison("cmp-1", "2026-11-20T10:00:00.000Z", types), 25));
    expect(message).to.include("no type of comparison cmp-1 of 2026-11-20T10:00:00.000Z finished within --time-budget 25 min");
    expect(message).to.include("t3.large 95.0 min, m5.large 50.0 min, c5.xlarge 30.0 min, m5.xlarge failed (not a candidate)");
    expect(message).to.include("the fastest is c5.xlarge (30.0 min): give a budget of at least 30 min");
    const allFailed = refusal(() => chooseInstanceType(comparison("cmp-2", "2026-11-20T10:00:00.000Z", [types[3]]), 60));
    expect(allFailed).to.include("no type of comparison cmp-2 of 2026-11-20T10:00:00.000Z succeeded with an on-demand cost (m5.xlarge failed (not a candidate))");
  });

  it("auto and --time-budget need each other; a budget is minutes > 0", () => {
    expect(refusal(() => autoBudget("auto", undefined))).to.include("--instance-type auto picks the cheapest type that finished within a time budget: give --time-budget MINUTES");
    expect(refusal(() => autoBudget("m5.large", 30))).to.include("--time-budget is for --instance-type auto (the instance type here is m5.large)");
    expect(refusal(() => autoBudget("auto", 0))).to.include("--time-budget 0: expected minutes, a number > 0");
    expect(autoBudget("auto", 12.5)).to.equal(12.5);
    expect(autoBudget("m5.large", undefined)).to.equal(undefined);
  });

  it("a batch's workers get the chosen type in place of auto, however it was given", () => {
    expect(withChosenType(["--config", "c.yaml", "--instance-type", "auto", "--spot"], "m5.large")).to.deep.equal(["--config", "c.yaml", "--spot", "--instance-type", "m5.large"]);
    expect(withChosenType(["--config", "c.yaml"], "m5.large")).to.deep.equal(["--config", "c.yaml", "--instance-type", "m5.large"]);
  });

  it("pulumi up by hand refuses auto, naming the driver's flags", () => {
    const config: Record<string, string> = { "cloudcompute:subject": "sub-01", "cloudcompute:image": "x", "cloudcompute:inputs": "s3://b/k", "cloudcompute:outputPrefix": "s3://b/out", "cloudcompute:instanceType": "auto", "aws:region": "us-east-1" };
    expect(() => specFromConfig((key) => config[key])).to.throw(ConfigError, "cloudcompute:instanceType: auto is chosen by the driver from a comparison (npm run job -- --instance-type auto --time-budget MINUTES), not by pulumi up");
  });
});

describe("--instance-type auto: which comparison", () => {
  let home: string;
  const job = { image: IMAGE, command: COMMAND, platform: "local", region: "us-east-1", spot: false };
  beforeEach(() => (home = fs.mkdtempSync(path.join(os.tmpdir(), "cc-cmp-"))));
  afterEach(() => fs.rmSync(home, { recursive: true, force: true }));
  const dir = () => path.join(home, "comparisons");

  it("the newest comparison wins over older ones, whatever their ids' order", () => {
    saveComparison(home, comparison("zz-old", "2026-11-01T00:00:00Z", [measured("m5.large", 10, 0.01)]));
    saveComparison(home, comparison("aa-new", "2026-11-25T00:00:00Z", [measured("c5.large", 10, 0.02)]));
    saveComparison(home, comparison("mm-mid", "2026-11-10T00:00:00Z", [measured("t3.large", 10, 0.005)]));
    expect(resolveAutoInstanceType(job, 30, { dir: dir() })).to.include({ comparisonId: "aa-new", chosen: "c5.large" });
  });

  it("another image's or command's comparison, or another platform's or region's, is not used; with none, the --compare command to run", () => {
    saveComparison(home, comparison("other-image", "2026-11-25T00:00:00Z", [measured("m5.large", 10, 0.01)], { image: "busybox" }));
    saveComparison(home, comparison("other-command", "2026-11-25T00:00:00Z", [measured("m5.large", 10, 0.01)], { command: ["false"] }));
    saveComparison(home, comparison("other-platform", "2026-11-25T00:00:00Z", [measured("m5.large", 10, 0.01)], { platform: "aws" }));
    saveComparison(home, comparison("other-region", "2026-11-25T00:00:00Z", [measured("m5.large", 10, 0.01)], { region: "eu-west-1" }));
    const message = refusal(() => resolveAutoInstanceType(job, 30, { dir: dir() }));
    expect(message).to.include(`no comparison of instance types for image none with command ["true"] on local in us-east-1`);
    expect(message).to.include("run one first (npm run job -- --subject SUBJECT --compare TYPE,TYPE,...)");
    saveComparison(home, comparison("mine", "2026-11-02T00:00:00Z", [measured("m5.2xlarge", 10, 0.3)]));
    expect(resolveAutoInstanceType(job, 30, { dir: dir() })).to.include({ comparisonId: "mine", chosen: "m5.2xlarge" });
  });

  it("crafted and corrupt files are passed over, however new, and none of their text is taken", () => {
    const good = comparison("good", "2026-11-01T00:00:00Z", [measured("m5.large", 10, 0.01)]);
    saveComparison(home, good);
    const newer = (id: string, more: Record<string, unknown>) => JSON.stringify({ ...comparison(id, "2026-11-28T00:00:00Z", [measured("c5.large", 10, 0.001)]), ...more });
    saveComparison(home, "{ not json", "broken");
    saveComparison(home, "null", "null-doc");
    saveComparison(home, newer("foreign", { kind: "something-else" }), "foreign");
    saveComparison(home, newer("v2", { version: 2 }), "v2");
    saveComparison(home, newer("elsewhere", {}), "renamed-dir"); // its id is not its folder's
    saveComparison(home, newer("forged-key", { image: "busybox" }), "forged-key"); // claims our key for another image
    saveComparison(home, newer("bad-date", { createdAt: "yesterday" }), "bad-date");
    saveComparison(home, newer("injected", { types: [measured("c5.large\u001b[2J", 10, 0.001)] }), "injected");
    saveComparison(home, newer("auto-type", { types: [measured("auto", 10, 0.001)] }), "auto-type");
    saveComparison(home, newer("nan", { types: [{ ...measured("c5.large", 10, 0.001), wallSeconds: "10" }] }), "nan");
    saveComparison(home, newer("neg", { types: [measured("c5.large", 10, -1)] }), "neg");
    saveComparison(home, newer("neg-spot", { types: [measured("c5.large", 10, 0.001, { spotUsd: -1 })] }), "neg-spot");
    saveComparison(home, newer("text-cost", { types: [{ ...measured("c5.large", 10, 0.001), onDemandUsd: "0" }] }), "text-cost");
    saveComparison(home, newer("spot-text", { spot: "yes" }), "spot-text");
    saveComparison(home, newer("bad id\u001b", {}), "x"); // not a plain id either way
    fs.mkdirSync(path.join(dir(), "a-dir", "comparison.json"), { recursive: true });
    fs.mkdirSync(path.join(dir(), "dev-zero"));
    fs.symlinkSync("/dev/zero", path.join(dir(), "dev-zero", "comparison.json"));
    saveComparison(home, " ".repeat(2 * 1024 * 1024) + newer("huge", {}), "huge");
    fs.writeFileSync(path.join(dir(), "stray-file"), "x");
    // Dated far ahead (a planted file, or a clock running ahead): it would shadow every real comparison for ever.
    saveComparison(home, newer("future", { createdAt: "+275760-09-13T00:00:00.000Z" }), "future");
    saveComparison(home, newer("next-year", { createdAt: new Date(Date.now() + 365 * 86400_000).toISOString() }), "next-year");
    // A FIFO would hang a plain read; a folder that is a link to another user's comparisons is not ours.
    fs.mkdirSync(path.join(dir(), "fifo"));
    execFileSync("mkfifo", [path.join(dir(), "fifo", "comparison.json")]);
    const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), "cc-other-comparison-"));
    fs.mkdirSync(path.join(elsewhere, "linked"));
    fs.writeFileSync(path.join(elsewhere, "linked", "comparison.json"), newer("linked", {}));
    fs.symlinkSync(path.join(elsewhere, "linked"), path.join(dir(), "linked"));
    // Another user's file in a shared home (only root can make one here).
    if (process.getuid?.() === 0) {
      saveComparison(home, newer("other-user", {}), "other-user");
      fs.chownSync(path.join(dir(), "other-user", "comparison.json"), 12345, 12345);
    }
    expect(listComparisons(dir()).map((c) => c.comparisonId)).to.deep.equal(["good"]);
    expect(resolveAutoInstanceType(job, 30, { dir: dir() })).to.include({ comparisonId: "good", chosen: "m5.large" });
    expect(latestComparison(KEY, { platform: "local" }, path.join(home, "nowhere"))).to.equal(undefined);
  });
});

describe("--instance-type auto and the dry run's estimate through the CLI", function () {
  this.timeout(5 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  const auto = ["--instance-type", "auto", "--dry-run", "--json"];

  before(async () => {
    sandbox = await startDriverSandbox();
    config = sandbox.writeConfig("auto.yaml", localJobConfig(sandbox, { image: IMAGE, runtime: "none", command: COMMAND }));
    saveComparison(sandbox.home, comparison("cmp-old", "2026-11-01T00:00:00.000Z", [measured("t3.micro", 5, 0.001)]));
    saveComparison(sandbox.home, comparison("cmp-20261120", "2026-11-20T10:00:00.000Z", [
      measured("t3.large", 95, 0.08),
      measured("m5.large", 50, 0.09, { billedSeconds: 2970 }),
      measured("c5.xlarge", 30, 0.11),
      measured("m5.xlarge", 20, 0.05, { outcome: "failed" }),
    ]));
  });
  after(async () => {
    await sandbox?.stop();
  });

  it("picks the type, says which comparison chose it, and the spec and estimate use it", async () => {
    const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...auto, "--time-budget", "60", "--price-per-hour", "3.6"]);
    expect(res.code, res.stderr).to.equal(0);
    const out = lastJson(res.stdout);
    expect(out.spec.instance.type).to.equal("m5.large");
    expect(out.instanceTypeChoice).to.deep.equal({ comparisonId: "cmp-20261120", createdAt: "2026-11-20T10:00:00.000Z", chosen: "m5.large", costPerSubjectUsd: 0.09, costBasis: "on-demand", wallSeconds: 3000, budgetMinutes: 60 });
    expect(res.stderr).to.include("instance type auto: m5.large from comparison cmp-20261120 of 2026-11-20T10:00:00.000Z: $0.09 per subject on demand, 50.0 min wall time, the cheapest within --time-budget 60 min");
    // The measured 2970 billed seconds at $3.6/h ($0.001 a second).
    expect(out.estimate).to.deep.include({ perSubjectUsd: 2.97, subjects: 1, totalUsd: 2.97 });
    expect(out.estimate.instance).to.include({ billedSeconds: 2970, usdPerHour: 3.6, source: "--price-per-hour" });
    expect(out.estimate.basis).to.deep.equal({ kind: "comparison", comparisonId: "cmp-20261120", createdAt: "2026-11-20T10:00:00.000Z", instanceType: "m5.large", measuredSeconds: 2970 });
    expect(res.stderr).to.include("estimate: $2.97 per subject for 2970 s as measured on m5.large (from comparison cmp-20261120 of 2026-11-20T10:00:00.000Z)");
  });

  it("a batch chooses once for all its subjects", async () => {
    const file = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(file, SUBJECTS.join("\n") + "\n");
    const res = await sandbox.run(["--config", config, "--subjects-file", file, ...auto, "--time-budget", "40", "--price-per-hour", "3.6"]);
    expect(res.code, res.stderr).to.equal(0);
    const out = lastJson(res.stdout);
    expect(out.jobs.map((j: { spec: { instance: { type: string } } }) => j.spec.instance.type)).to.deep.equal(["c5.xlarge", "c5.xlarge"]);
    expect(out.instanceTypeChoice).to.include({ chosen: "c5.xlarge", budgetMinutes: 40 });
    expect(res.stderr.match(/instance type auto: c5\.xlarge from comparison cmp-20261120/g)).to.have.length(1);
    expect(out.estimate).to.deep.include({ perSubjectUsd: 1.77, subjects: 2, totalUsd: 3.54 });
  });

  it("a batch that runs: auto from the config file, chosen once, and its workers run the chosen type (a worker given auto would refuse it)", async () => {
    await sandbox.seed([SUBJECTS[1]]);
    const command = ["sh", "-c", 'echo done > "$1/out.txt"', "sh", "{output}"];
    const autoConfig = sandbox.writeConfig("auto-run.yaml", { ...localJobConfig(sandbox, { image: IMAGE, runtime: "none", command }), "cloudcompute:instanceType": "auto" });
    saveComparison(sandbox.home, comparison("cmp-run", "2026-11-21T00:00:00.000Z", [measured("c5.large", 5, 0.01), measured("m5.large", 5, 0.02)], { command }));
    const file = path.join(sandbox.home, "one-subject.txt");
    fs.writeFileSync(file, `${SUBJECTS[1]}\n`);
    const res = await sandbox.run(["--config", autoConfig, "--subjects-file", file, "--time-budget", "10", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const result = lastJson(res.stdout);
    expect(result.instanceTypeChoice).to.include({ comparisonId: "cmp-run", chosen: "c5.large" });
    expect(result.entries.map((e: { outcome: string }) => e.outcome)).to.deep.equal(["succeeded"]);
    expect(res.stderr).to.include("instance type auto: c5.large from comparison cmp-run");
  });

  it("refuses, exit 2 and nothing created: auto without a budget, a budget without auto or not > 0, none within it, no comparison", async () => {
    const cases: Array<[string[], string]> = [
      [["--instance-type", "auto", "--dry-run"], "give --time-budget MINUTES"],
      [["--instance-type", "m5.large", "--time-budget", "30", "--dry-run"], "--time-budget is for --instance-type auto (the instance type here is m5.large)"],
      [["--time-budget", "30", "--dry-run"], "--time-budget is for --instance-type auto (the instance type here is m5.large)"],
      [[...auto, "--time-budget", "0"], "--time-budget 0: expected minutes, a number > 0"],
      [[...auto, "--time-budget", "soon"], '--time-budget "soon": expected minutes, a number > 0'],
      [[...auto, "--time-budget", "20"], "the fastest is c5.xlarge (30.0 min): give a budget of at least 30 min"],
      [[...auto, "--time-budget", "60", "--command", "false"], `no comparison of instance types for image none with command ["false"] on local in us-east-1`],
      [[...auto, "--time-budget", "60", "--region", "eu-west-1"], "on local in eu-west-1"],
    ];
    const stacks = () => (fs.existsSync(path.join(sandbox.home, "state")) ? fs.readdirSync(path.join(sandbox.home, "state"), { recursive: true }).length : 0);
    const before = stacks();
    for (const [args, message] of cases) {
      const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...args]);
      expect(res.code, `${args.join(" ")}: ${res.stderr}`).to.equal(2);
      expect(res.stderr, args.join(" ")).to.include(message);
      expect(res.stdout, "nothing rendered").to.equal("");
    }
    expect(stacks(), "no stack created").to.equal(before);
  });

  it("the dry run's estimate: a comparison's measure for the job's own type; --expected-minutes wins and says so; neither, no estimate", async () => {
    const base = ["--config", config, "--subject", SUBJECTS[0], "--dry-run", "--json", "--price-per-hour", "3.6"];
    const fromComparison = await sandbox.run([...base, "--instance-type", "c5.xlarge"]);
    expect(fromComparison.code, fromComparison.stderr).to.equal(0);
    const { estimate } = lastJson(fromComparison.stdout);
    expect(estimate.basis).to.include({ kind: "comparison", comparisonId: "cmp-20261120", measuredSeconds: 1770 });
    expect(estimate).to.include({ perSubjectUsd: 1.77, expectedMinutes: 29.5 });
    expect(lastJson(fromComparison.stdout).instanceTypeChoice, "an explicit type is no choice").to.equal(undefined);

    const explicit = await sandbox.run([...base, "--instance-type", "c5.xlarge", "--expected-minutes", "10"]);
    expect(explicit.code, explicit.stderr).to.equal(0);
    const wins = lastJson(explicit.stdout).estimate;
    expect(wins).to.include({ perSubjectUsd: 0.6, expectedMinutes: 10 });
    expect(wins.basis).to.deep.equal({ kind: "expected-minutes", overrides: { comparisonId: "cmp-20261120", createdAt: "2026-11-20T10:00:00.000Z", measuredSeconds: 1770 } });
    expect(explicit.stderr).to.include("--expected-minutes wins over comparison cmp-20261120 of 2026-11-20T10:00:00.000Z (measured 1770 s)");

    // The failed type's measure is no measure; a type never compared has none.
    for (const type of ["m5.xlarge", "r5.large"]) {
      const none = await sandbox.run([...base, "--instance-type", type]);
      expect(none.code, none.stderr).to.equal(0);
      expect(lastJson(none.stdout).estimate, type).to.equal(undefined);
      expect(none.stderr).to.not.include("estimate:");
      const minutes = await sandbox.run([...base, "--instance-type", type, "--expected-minutes", "30"]);
      expect(lastJson(minutes.stdout).estimate).to.deep.include({ perSubjectUsd: 1.8, basis: { kind: "expected-minutes" } });
    }
  });
});
