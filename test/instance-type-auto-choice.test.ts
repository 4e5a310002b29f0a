/**
 * `--instance-type auto` after the cold reviews: which cost ranks the types (the job's own, spot or on demand, not
 * the comparison's), interrupted or failed comparisons passed over (and the dry run's estimate from the same one as
 * the choice), and the `--compare` command suggested with no comparison, run as printed.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { COMPARISON_KIND, COMPARISON_VERSION, comparisonKey, type Comparison, type ComparedType } from "../job/comparison";
import { listComparisons } from "../driver/comparisons";
import { chooseInstanceType, choiceLine, resolveAutoInstanceType } from "../driver/instance-type-auto";
import { suggestedCompareCommand } from "../driver/auto-compare-command";
import { refusal, saveComparison } from "./support/comparisons";
import { DriverSandbox, localJobConfig, startDriverSandbox } from "../sandbox/driver-sandbox";

const IMAGE = "none";
const SUBJECT = "NDARINV0000AAAA";
const lastJson = (stdout: string) => JSON.parse(stdout.trim().split("\n").pop()!);

function run(instanceType: string, wallMinutes: number, costs: Partial<ComparedType>, outcome = "succeeded"): ComparedType {
  const seconds = Math.round(wallMinutes * 60);
  return { instanceType, jobId: `job-${instanceType}`, outcome, wallSeconds: seconds, phases: { driver: { total: seconds }, agent: {} }, instanceSeconds: seconds - 30, billedSeconds: seconds - 30, ...costs };
}

function comparison(id: string, createdAt: string, command: string[], types: ComparedType[], more: Partial<Comparison> = {}): Comparison {
  return { kind: COMPARISON_KIND, version: COMPARISON_VERSION, comparisonId: id, createdAt, key: comparisonKey(IMAGE, command), image: IMAGE, command, subject: SUBJECT, platform: "local", region: "us-east-1", subjects: 1, concurrency: 1, types, ...more };
}

describe("--instance-type auto: the cost that applies to the job", () => {
  const at = "2026-11-20T10:00:00.000Z";
  // c5.large is the cheaper on demand, m5.large the cheaper on spot.
  const types = [run("c5.large", 10, { onDemandUsd: 0.01, spotUsd: 0.008, costPerSubjectUsd: 0.008 }), run("m5.large", 10, { onDemandUsd: 0.02, spotUsd: 0.004, costPerSubjectUsd: 0.004 })];

  it("ranks by on-demand cost for an on-demand job and by spot cost for a spot job, whatever the comparison ran on, and says which", () => {
    const spotComparison = comparison("spot", at, ["true"], types, { spot: true });
    const onDemand = chooseInstanceType(spotComparison, 30, false);
    expect(onDemand).to.include({ chosen: "c5.large", costPerSubjectUsd: 0.01, costBasis: "on-demand" });
    expect(choiceLine(onDemand)).to.include("c5.large from comparison spot of 2026-11-20T10:00:00.000Z: $0.01 per subject on demand,");
    const spot = chooseInstanceType(comparison("od", at, ["true"], types, { spot: false }), 30, true);
    expect(spot).to.include({ chosen: "m5.large", costPerSubjectUsd: 0.004, costBasis: "spot" });
    expect(choiceLine(spot)).to.include("$0.004 per subject on spot,");
  });

  it("without the job's own cost: a spot comparison's cost is a spot cost only; a file that does not say is taken as compared", () => {
    const onlyAsRun = [run("c5.large", 10, { costPerSubjectUsd: 0.03 }), run("m5.large", 10, { onDemandUsd: 0.05, costPerSubjectUsd: 0.05 })];
    expect(chooseInstanceType(comparison("s", at, ["true"], onlyAsRun, { spot: true }), 30, true)).to.include({ chosen: "c5.large", costBasis: "spot" });
    // For an on-demand job, c5.large's spot cost is no cost at all: m5.large is the only candidate.
    expect(chooseInstanceType(comparison("s", at, ["true"], onlyAsRun, { spot: true }), 30, false)).to.include({ chosen: "m5.large", costBasis: "on-demand" });
    const old = chooseInstanceType(comparison("old", at, ["true"], [run("c5.large", 10, { costPerSubjectUsd: 0.03 })]), 30, true);
    expect(old).to.include({ chosen: "c5.large", costBasis: "as-compared" });
    expect(choiceLine(old)).to.include("$0.03 per subject as compared (the comparison does not say spot or on demand)");
    const message = refusal(() => chooseInstanceType(comparison("od", at, ["true"], [run("c5.large", 10, { costPerSubjectUsd: 0.03 })], { spot: false }), 30, true));
    expect(message).to.include("no type of comparison od of 2026-11-20T10:00:00.000Z succeeded with a spot cost (c5.large succeeded without a spot cost (not a candidate))");
  });
});

describe("--instance-type auto: interrupted and failed comparisons are passed over", () => {
  let home: string;
  const command = ["true"];
  const job = { image: IMAGE, command, platform: "local", region: "us-east-1", spot: false };
  beforeEach(() => (home = fs.mkdtempSync(path.join(os.tmpdir(), "cc-cmp-"))));
  afterEach(() => fs.rmSync(home, { recursive: true, force: true }));

  it("takes the newest comparison with a succeeded, priced type, naming the newer ones without", () => {
    saveComparison(home, comparison("good", "2026-11-01T00:00:00.000Z", command, [run("c5.large", 10, { onDemandUsd: 0.01, costPerSubjectUsd: 0.01 })]));
    saveComparison(home, comparison("all-failed", "2026-11-10T00:00:00.000Z", command, [run("c5.large", 2, { onDemandUsd: 0.001 }, "failed")]));
    saveComparison(home, comparison("nothing-started", "2026-11-20T00:00:00.000Z", command, []));
    const choice = resolveAutoInstanceType(job, 30, { dir: path.join(home, "comparisons") });
    expect(choice).to.deep.include({ comparisonId: "good", chosen: "c5.large", passedOver: [{ comparisonId: "nothing-started", createdAt: "2026-11-20T00:00:00.000Z" }, { comparisonId: "all-failed", createdAt: "2026-11-10T00:00:00.000Z" }] });
    expect(choiceLine(choice)).to.include("c5.large from comparison good of 2026-11-01T00:00:00.000Z (newer comparison nothing-started of 2026-11-20T00:00:00.000Z, comparison all-failed of 2026-11-10T00:00:00.000Z: no type succeeded with a price)");
  });

  it("with none usable, the newest one's refusal says the older had none either, and how to compare again", () => {
    saveComparison(home, comparison("all-failed", "2026-11-10T00:00:00.000Z", command, [run("c5.large", 2, { onDemandUsd: 0.001 }, "failed")]));
    saveComparison(home, comparison("nothing-started", "2026-11-20T00:00:00.000Z", command, []));
    const message = refusal(() => resolveAutoInstanceType(job, 30, { dir: path.join(home, "comparisons"), suggestion: () => "npm run job -- --compare x" }));
    expect(message).to.include("no type of comparison nothing-started of 2026-11-20T00:00:00.000Z succeeded with an on-demand cost (no types) (nor any of the 1 older): run --compare again:\n  npm run job -- --compare x");
  });
});

describe("--instance-type auto through the CLI: passed-over comparisons, spot, and the suggested --compare run as printed", function () {
  this.timeout(5 * 60_000);
  let sandbox: DriverSandbox;
  before(async () => {
    sandbox = await startDriverSandbox();
    await sandbox.seed([SUBJECT]);
  });
  after(async () => {
    await sandbox?.stop();
  });
  const configFor = (name: string, command: string[]) => sandbox.writeConfig(name, localJobConfig(sandbox, { image: IMAGE, runtime: "none", command }));

  it("the choice and the estimate come from the same comparison, past newer ones without a usable type; --spot ranks by spot cost", async () => {
    const command = ["true", "consistency"];
    const config = configFor("consistency.yaml", command);
    saveComparison(sandbox.home, comparison("cmp-good", "2026-11-01T00:00:00.000Z", command, [
      run("c5.large", 5, { onDemandUsd: 0.01, spotUsd: 0.008, costPerSubjectUsd: 0.01 }),
      run("m5.large", 5, { onDemandUsd: 0.02, spotUsd: 0.004, costPerSubjectUsd: 0.02 }),
    ]));
    // Newer: c5.large succeeded but unpriced (not a candidate, yet measured), then one where everything failed.
    saveComparison(sandbox.home, comparison("cmp-unpriced", "2026-11-10T00:00:00.000Z", command, [run("c5.large", 12, {})]));
    saveComparison(sandbox.home, comparison("cmp-failed", "2026-11-20T00:00:00.000Z", command, [run("c5.large", 1, { onDemandUsd: 0.001 }, "failed")]));
    const base = ["--config", config, "--subject", SUBJECT, "--instance-type", "auto", "--time-budget", "30", "--dry-run", "--json", "--price-per-hour", "3.6"];
    const res = await sandbox.run(base);
    expect(res.code, res.stderr).to.equal(0);
    const out = lastJson(res.stdout);
    expect(out.instanceTypeChoice).to.deep.include({ comparisonId: "cmp-good", chosen: "c5.large", costBasis: "on-demand", costPerSubjectUsd: 0.01 });
    expect(out.instanceTypeChoice.passedOver.map((c: { comparisonId: string }) => c.comparisonId)).to.deep.equal(["cmp-failed", "cmp-unpriced"]);
    expect(res.stderr).to.include("(newer comparison cmp-failed of 2026-11-20T00:00:00.000Z, comparison cmp-unpriced of 2026-11-10T00:00:00.000Z: no type succeeded with a price)");
    // Not cmp-unpriced's 690 s: the comparison that chose the type measured 270 s.
    expect(out.estimate.basis).to.include({ kind: "comparison", comparisonId: "cmp-good", measuredSeconds: 270 });

    const spot = await sandbox.run([...base, "--spot"]);
    expect(spot.code, spot.stderr).to.equal(0);
    expect(lastJson(spot.stdout).instanceTypeChoice).to.include({ chosen: "m5.large", costBasis: "spot", costPerSubjectUsd: 0.004 });
    expect(spot.stderr).to.include("$0.004 per subject on spot");
  });

  it("with no comparison, suggests a --compare that runs as printed (config, platform, region repeated; no --instance-type; priced on local; no --env value), and auto then uses it", async () => {
    const command = ["sh", "-c", 'echo suggested > "$1/out.txt"', "sh", "{output}"];
    const config = configFor("my config.yaml", command); // a space: the path must be quoted to run
    const auto = ["--config", config, "--subject", SUBJECT, "--platform", "local", "--region", "us-east-1", "--env", "TOKEN=s3cret", "--instance-type", "auto", "--time-budget", "30"];
    const refused = await sandbox.run([...auto, "--dry-run"]);
    expect(refused.code, refused.stderr).to.equal(2);
    const line = refused.stderr.split("\n").find((l) => l.trim().startsWith("npm run job -- "));
    expect(line, refused.stderr).to.be.a("string");
    expect(line).to.not.include("--instance-type");
    expect(line).to.not.include("s3cret");
    expect(line).to.include(`--config '${config}'`).and.include("--platform local").and.include("--region us-east-1").and.include("--env TOKEN");
    expect(line).to.include("--compare m5.xlarge=0.192,c5.2xlarge=0.34,m5.2xlarge=0.384");
    expect(suggestedCompareCommand({ config }, SUBJECT, "aws")).to.match(/--compare m5\.xlarge,c5\.2xlarge,m5\.2xlarge$/);

    // The words a shell makes of the suggestion, run as the CLI's arguments.
    const words = spawnSync("sh", ["-c", `printf '%s\\0' ${line!.trim().slice("npm run job -- ".length)}`], { encoding: "utf8" });
    const args = words.stdout.split("\0").slice(0, -1);
    expect(args).to.include(config);
    const compared = await sandbox.run(args, { extraEnv: { TOKEN: "s3cret" } });
    expect(compared.code, compared.stderr).to.equal(0);
    const saved = listComparisons(path.join(sandbox.home, "comparisons")).filter((c) => c.key === comparisonKey(IMAGE, command));
    expect(saved).to.have.length(1);

    const chosen = await sandbox.run([...auto, "--dry-run", "--json"]);
    expect(chosen.code, chosen.stderr).to.equal(0);
    expect(lastJson(chosen.stdout).instanceTypeChoice).to.include({ comparisonId: saved[0].comparisonId });
  });
});
