/**
 * `--output-layout bids` end to end: the real Pulumi engine, moto, podman, the agent bundle, `--platform local`. The
 * driver's result and summary show the sub-<label>/ folder, the description is at the prefix, and a batch over the
 * same prefix skips the subject by reading the bids folder's results pointer.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as path from "node:path";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import type { JobResult } from "../driver/run";
import { podmanAvailable, podmanTestEnv } from "../sandbox/podman";
import { DriverSandbox, localJobConfig, startDriverSandbox, batchResultOf } from "../sandbox/driver-sandbox";

describe("output layout bids end to end (real Pulumi engine, moto, podman)", function () {
  this.timeout(10 * 60_000);
  let sandbox: DriverSandbox;
  let image: string;
  let config: string;
  const s3Text = async (key: string) => (await (await sandbox.s3.send(new GetObjectCommand({ Bucket: sandbox.bucket, Key: key }))).Body!.transformToString()) as string;

  before(async function () {
    if (!podmanAvailable()) throw new Error("podman is required for the e2e tests");
    const podman = await podmanTestEnv();
    image = podman.registryImage;
    sandbox = await startDriverSandbox(podman.env);
    await sandbox.seed(["NDARINV0000AAAA"]);
    config = sandbox.writeConfig("Pulumi.bids.yaml", {
      ...localJobConfig(sandbox, { image, runtime: "podman", command: ["sh", "-c", 'echo "segmented $2" > "$1/$2_report.txt"', "sh", "{output}", "{subject}"] }),
      "cloudcompute:outputLayout": "bids",
    });
  });
  after(async () => {
    await sandbox?.stop();
  });

  it("runs a job into sub-<label>/, says so in the summary, and leaves the description at the prefix", async () => {
    const res = await sandbox.run(["--config", config, "--subject", "NDAR_INV0000AAAA", "--json"]);
    expect(res.code, res.stderr).to.equal(0);
    const result = JSON.parse(res.stdout) as JobResult;
    expect(result.outcome).to.equal("succeeded");
    expect(result.resultsUrl).to.equal(`s3://${sandbox.bucket}/results/sub-NDARINV0000AAAA/`);
    expect(res.stderr).to.include(`results:  ${result.resultsUrl}`);
    expect((await s3Text("results/sub-NDARINV0000AAAA/NDARINV0000AAAA_report.txt")).trim()).to.equal("segmented NDARINV0000AAAA");
    const description = JSON.parse(await s3Text("results/dataset_description.json"));
    expect(description.DatasetType).to.equal("derivative");
    expect(description.GeneratedBy[0].Container.Tag).to.match(new RegExp(`^${image.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}@sha256:[0-9a-f]{64}$`));
    // The bundle's version, not the source's "dev": the agent that ran wrote it.
    expect(description.GeneratedBy[0].Version).to.not.equal("dev");

    const subjects = path.join(sandbox.home, "subjects.txt");
    fs.writeFileSync(subjects, "NDAR_INV0000AAAA\n");
    const batch = await sandbox.run(["--config", config, "--subjects-file", subjects, "--json"]);
    expect(batch.code, batch.stderr).to.equal(0);
    const entries = batchResultOf(batch.stdout).entries;
    expect(entries.map((e) => [e.outcome, e.succeededBefore])).to.deep.equal([["skipped", result.jobId]]);
  });
});
