/**
 * The cost estimate before launch and the price in a job's result, through the real CLI: `--expected-minutes` with
 * `--dry-run` (one job and a batch), the Pricing API unreachable (a closed port) so the dated table answers and says
 * so, `--price-per-hour` instead, bad values refused; and a local job's result carrying the price its cost used.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { DriverSandbox, localJobConfig, REPO_ROOT, startDriverSandbox } from "../sandbox/driver-sandbox";
import { PRICE_TABLE } from "../job/price-table";

const SUBJECTS = ["NDARINV0000AAAA", "NDARINV0000BBBB", "NDARINV0000CCCC"];
const lastJson = (stdout: string) => JSON.parse(stdout.trim().split("\n").pop()!);

describe("cost estimate and price through the CLI", function () {
  this.timeout(5 * 60_000);
  let sandbox: DriverSandbox;
  let config: string;
  const aws = ["--platform", "aws", "--runtime", "docker", "--image", "neuronets/kwyk:latest-cpu", "--instance-type", "m5.4xlarge", "--region", "us-east-1"];

  before(async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const closed = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    sandbox = await startDriverSandbox({ AWS_ENDPOINT_URL_PRICING: `http://127.0.0.1:${closed}` });
    config = sandbox.writeConfig("pricing.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["true"] }));
  });
  after(async () => {
    await sandbox?.stop();
  });

  it("--expected-minutes 10 --dry-run --json: m5.4xlarge for 10 minutes plus its volume, from the dated table when the Pricing API is unreachable", async () => {
    const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...aws, "--expected-minutes", "10", "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const { estimate } = lastJson(res.stdout);
    expect(estimate.perSubjectUsd).to.be.within(0.12, 0.16);
    expect(estimate.instance).to.include({ usdPerHour: 0.768, source: "built-in table", asOf: PRICE_TABLE.asOf, billedSeconds: 600, usd: 0.128 });
    expect(estimate.instance.note).to.match(/Pricing API did not answer/);
    expect(estimate.volume).to.include({ gib: 50, usdPerGibMonth: 0.08, source: "built-in table" });
    expect(res.stderr).to.match(/estimate: \$0\.13 per subject for 10 min: instance \$0\.13 at \$0\.768\/h \(built-in table, 2026-11-29/);
    expect(fs.existsSync(path.join(sandbox.home, "prices", "us-east-1.json")), "a table price is not cached").to.equal(false);
  });

  it("the issue's command with the repository's Pulumi.dev.yaml (its input names another subject): the estimate beside the refusal, exit 2", async () => {
    const res = await sandbox.run(["--config", path.join(REPO_ROOT, "Pulumi.dev.yaml"), "--subject", "sub-01", "--instance-type", "m5.4xlarge", "--region", "us-east-1", "--expected-minutes", "10", "--dry-run", "--json"]);
    expect(res.code, res.stderr).to.equal(2);
    const out = lastJson(res.stdout);
    expect(out.refused.message).to.match(/names subject NDARINV1A2B3C4D, but this job's subject is sub-01/);
    expect(out.estimate.perSubjectUsd).to.be.within(0.12, 0.16);
    expect(out.estimate.instance).to.include({ usdPerHour: 0.768, source: "built-in table", asOf: PRICE_TABLE.asOf });
    expect(res.stderr).to.match(/estimate: \$0\.13 per subject for 10 min.*\(the job itself is refused, below\)\nerror: invalid configuration/s);
    // Without --expected-minutes a refused dry run prints nothing on stdout, as any refusal.
    const plain = await sandbox.run(["--config", path.join(REPO_ROOT, "Pulumi.dev.yaml"), "--subject", "sub-01", "--dry-run", "--json"]);
    expect(plain.code).to.equal(2);
    expect(plain.stdout).to.equal("");
  });

  it("uses --price-per-hour when given, and a batch dry run multiplies by its subjects", async () => {
    const single = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...aws, "--expected-minutes", "30", "--price-per-hour", "1.2", "--dry-run", "--json"]);
    expect(single.code, single.stderr).to.equal(0);
    expect(lastJson(single.stdout).estimate).to.deep.include({ perSubjectUsd: 0.6, subjects: 1 });
    expect(lastJson(single.stdout).estimate.instance).to.include({ usdPerHour: 1.2, source: "--price-per-hour" });

    const file = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(file, SUBJECTS.join("\n") + "\n");
    const batch = await sandbox.run(["--config", config, "--subjects-file", file, ...aws, "--expected-minutes", "10", "--dry-run", "--json"]);
    expect(batch.code, batch.stderr).to.equal(0);
    const { estimate } = lastJson(batch.stdout);
    expect(estimate).to.include({ perSubjectUsd: 0.1289, subjects: 3, totalUsd: 0.3867 });
    expect(batch.stderr).to.match(/3 subjects \$0\.39/);
    // Without --json a terminal gets the gist, not every job's spec and user-data.
    const plain = await sandbox.run(["--config", config, "--subjects-file", file, ...aws, "--expected-minutes", "10", "--dry-run"]);
    expect(plain.code, plain.stderr).to.equal(0);
    expect(plain.stdout).to.match(/^dry run: \d+ subject\(s\), one job each; nothing was created\n  platform aws: m5\.4xlarge in us-east-1 \(on demand\)/);
    expect(plain.stdout.split("\n").length, "a few lines").to.be.lessThan(10);
    expect(plain.stderr).to.match(/estimate: .* subjects \$/);
  });

  it("refuses a non-positive or non-numeric --expected-minutes, and one without --dry-run (exit 2)", async () => {
    for (const value of ["0", "-5", "abc"]) {
      const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], ...aws, "--expected-minutes", value, "--dry-run"]);
      expect(res.code, value).to.equal(2);
      expect(res.stderr).to.include(`--expected-minutes ${value === "abc" ? '"abc"' : value}: expected minutes, a number > 0`);
    }
    const res = await sandbox.run(["--config", config, "--subject", SUBJECTS[0], "--expected-minutes", "10"]);
    expect(res.code).to.equal(2);
    expect(res.stderr).to.include("--expected-minutes is for --dry-run's cost estimate");
  });

  it("a finished job's result carries the price its cost was computed at", async () => {
    await sandbox.seed([SUBJECTS[1]]);
    const writes = sandbox.writeConfig("writes.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'echo done > "$1/out.txt"', "sh", "{output}"] }));
    const res = await sandbox.run(["--config", writes, "--subject", SUBJECTS[1], "--price-per-hour", "3.6", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const result = lastJson(res.stdout);
    expect(result.price).to.include({ usdPerHour: 3.6, source: "--price-per-hour" });
    expect(Date.parse(result.price.asOf)).to.not.be.NaN;
    // A local job is billed its seconds (no minimum): $3.6/h is $0.001 a second.
    expect(result.costUsd).to.be.closeTo(result.billedSeconds / 1000, 0.0001);
    expect(res.stderr).to.match(/at \$3\.6\/h \(--price-per-hour, \d{4}-\d\d-\d\d\)/);
  });
});
