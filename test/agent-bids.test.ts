/**
 * `--output-layout bids` through whole agent jobs: moto S3, podman + runc pulling from a local registry (the image's
 * digest goes into the description). Results under `sub-<label>/`, the BIDS-derivatives dataset_description.json
 * created once at the prefix and never overwritten (by a later job of another image, or over the user's own file),
 * none for a failed job, and the batch's "already succeeded" check reading the bids folder's pointer.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { runAgentJob } from "../agent/run";
import { findSuccess } from "../driver/batch";
import { BIDS_VERSION } from "../job/bids";
import { jobLayout } from "../job/layout";
import { parseJobSpec, type JobSpec, type JobSpecInput } from "../job/spec";
import { podmanAvailable, podmanTestEnv, type PodmanEnv } from "../sandbox/podman";
import { getBytes, getJson, listKeys, makeAbcdArchive, newBucket, put, sharedMoto, testS3 } from "./support/fixtures";

const A = "NDARINVBIDS0001";
const B = "NDARINVBIDS0002";
/** Copies the T1w it was given and writes a small derivative, as a segmentation tool would. */
const COPY = ["sh", "-c", 'cp "$1" "$2/" && echo "seg of $3" > "$2/$3_dseg.txt"', "job", "{input}", "{output}", "{subject}"];

describe("output layout bids (moto S3 + podman)", function () {
  this.timeout(120_000);
  let s3: S3Client;
  let bucket: string;
  let podman: PodmanEnv;
  let counter = 0;
  const workdirs: string[] = [];

  before(async function () {
    if (!podmanAvailable()) {
      console.warn("    podman is not installed: skipping bids layout job tests (CI installs podman)");
      this.skip();
    }
    await sharedMoto();
    podman = await podmanTestEnv();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-bids");
    for (const subject of [A, B]) await put(s3, bucket, `abcd/${subject}.tgz`, (await makeAbcdArchive(subject)).tgz);
  });
  after(() => {
    for (const dir of workdirs) rmSync(dir, { recursive: true, force: true });
  });

  function bidsSpec(subject: string, prefix: string, container: Partial<JobSpecInput["container"]> = {}): JobSpec {
    return parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: `job-${subject}-bids-${process.pid}-${++counter}`,
      subject,
      inputs: [{ name: "t1", url: `s3://${bucket}/abcd/${subject}.tgz`, select: "**/*_T1w.nii" }],
      container: { image: podman.registryImage, runtime: "podman", command: COPY, ...container },
      outputs: { prefix: `s3://${bucket}/${prefix}`, layout: "bids" },
      instance: { type: "m5.large", region: "us-east-1" },
    });
  }

  async function run(spec: JobSpec) {
    const workdir = mkdtempSync(path.join(tmpdir(), "cc-bids-"));
    workdirs.push(workdir);
    const result = await runAgentJob(spec, { workdir, client: testS3(), statusIntervalMs: 200, logIntervalMs: 500 });
    const log = (await getBytes(s3, bucket, jobLayout(spec).log.key)).toString();
    return { ...result, log };
  }

  it("writes the subject's results under sub-<label>/ and creates dataset_description.json with the image pinned to its digest", async () => {
    const spec = bidsSpec(A, "kwyk");
    const { marker, provenance, log } = await run(spec);
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect(marker.outputs.prefix).to.equal(`s3://${bucket}/kwyk/sub-${A}/`);
    const keys = (await listKeys(s3, bucket, "kwyk/")).filter((key) => !key.startsWith("kwyk/_cloudcompute/"));
    expect(keys).to.deep.equal(["kwyk/dataset_description.json", `kwyk/sub-${A}/${A}_dseg.txt`, `kwyk/sub-${A}/sub-${A}_ses-baselineYear1Arm1_run-01_T1w.nii`]);
    expect((await getBytes(s3, bucket, `kwyk/sub-${A}/${A}_dseg.txt`)).toString()).to.equal(`seg of ${A}\n`);

    const text = (await getBytes(s3, bucket, "kwyk/dataset_description.json")).toString();
    const description = JSON.parse(text);
    expect(description).to.deep.include({ Name: `cloudcompute: ${podman.registryImage}`, BIDSVersion: BIDS_VERSION, DatasetType: "derivative" });
    expect(provenance.image!.digest).to.match(/^sha256:[0-9a-f]{64}$/);
    expect(description.GeneratedBy).to.deep.equal([
      {
        Name: "cloudcompute",
        Version: provenance.agentVersion,
        Description: `Outputs of the container image ${podman.registryImage} (${provenance.image!.digest}), one job per subject on its own machine.`,
        Container: { Type: "docker", Tag: `${podman.registryImage}@${provenance.image!.digest}` },
      },
    ]);
    // The dataset's description, not the first job's: no subject, no job id.
    expect(text).not.to.include("BIDS0001").and.not.to.include(spec.jobId);
    // Written after the promotion into the results: the prefix is a dataset only once it holds a subject.
    const promotedAt = log.indexOf("promoted 2 object(s)");
    expect(promotedAt).to.be.greaterThan(-1);
    expect(log.indexOf(`wrote s3://${bucket}/kwyk/dataset_description.json`)).to.be.greaterThan(promotedAt);

    // The batch's "already succeeded" check reads the bids folder's pointer; under the other layout there is none.
    expect(await findSuccess(`s3://${bucket}/kwyk`, A, "bids")).to.equal(spec.jobId);
    expect(await findSuccess(`s3://${bucket}/kwyk`, A)).to.equal(undefined);
    expect(await findSuccess(`s3://${bucket}/kwyk`, B, "bids")).to.equal(undefined);
  });

  it("a later job of another subject and another image keeps the first job's description", async () => {
    const before = await getBytes(s3, bucket, "kwyk/dataset_description.json");
    const spec = bidsSpec(B, "kwyk", { image: "other/tool:9", runtime: "none" });
    const { marker, log } = await run(spec);
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect(marker.outputs.prefix).to.equal(`s3://${bucket}/kwyk/sub-${B}/`);
    expect((await getBytes(s3, bucket, "kwyk/dataset_description.json")).equals(before), "the description is unchanged").to.equal(true);
    expect(log).to.include(`s3://${bucket}/kwyk/dataset_description.json exists: kept as it is`);
    expect(await findSuccess(`s3://${bucket}/kwyk`, B, "bids")).to.equal(spec.jobId);
  });

  it("keeps a dataset_description.json the user wrote, byte for byte", async () => {
    const mine = '{\n  "Name": "Lab kwyk run, hand-written",\n  "BIDSVersion": "1.9.0",\n  "DatasetType": "derivative"\n}\n';
    await put(s3, bucket, "mine/dataset_description.json", mine);
    const { marker, log } = await run(bidsSpec(A, "mine", { runtime: "none" }));
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect((await getBytes(s3, bucket, "mine/dataset_description.json")).toString()).to.equal(mine);
    expect(log).to.include("exists: kept as it is");
  });

  it("a failed job writes no description (nor results)", async () => {
    const { marker } = await run(bidsSpec(A, "failed", { runtime: "none", command: ["sh", "-c", 'echo partial > "$1/x.txt"; exit 3', "job", "{output}"] }));
    expect(marker.outcome).to.equal("failed");
    expect((await listKeys(s3, bucket, "failed/")).filter((key) => !key.startsWith("failed/_cloudcompute/"))).to.deep.equal([]);
  });

  it("two subjects sharing one bids folder (HCPA01, HCPA_01): the second job fails and never touches the first's results", async () => {
    const make = (subject: string, body: string) => {
      const spec = bidsSpec(A, "shared", { runtime: "none", command: ["sh", "-c", `echo ${body} > "$1/result.txt"`, "job", "{output}"] });
      return { ...spec, subject, jobId: `job-${subject.replace("_", "")}-shared-${process.pid}-${++counter}` };
    };
    const first = make("HCPA01", "first");
    expect((await run(first)).marker.outcome).to.equal("succeeded");
    const second = make("HCPA_01", "second");
    expect(jobLayout(second).results.key, "the same folder").to.equal(jobLayout(first).results.key);
    const { marker } = await run(second);
    expect(marker.outcome, "another subject's results are not replaced").to.equal("failed");
    expect(marker.message).to.include("HCPA01");
    expect((await getBytes(s3, bucket, "shared/sub-HCPA01/result.txt")).toString()).to.equal("first\n");
    expect(await findSuccess(`s3://${bucket}/shared`, "HCPA01", "bids")).to.equal(first.jobId);
    expect(await findSuccess(`s3://${bucket}/shared`, "HCPA_01", "bids")).to.equal(undefined);
  });

  it("layout subject writes no description", async () => {
    const spec = bidsSpec(A, "plain", { runtime: "none" });
    const { marker } = await run({ ...spec, outputs: { ...spec.outputs, layout: "subject" } });
    expect(marker.outcome, marker.message).to.equal("succeeded");
    expect((await listKeys(s3, bucket, "plain/")).filter((key) => !key.startsWith("plain/_cloudcompute/"))).to.deep.equal([
      `plain/${A}/${A}_dseg.txt`,
      `plain/${A}/sub-${A}_ses-baselineYear1Arm1_run-01_T1w.nii`,
    ]);
    expect(await getJson(s3, bucket, jobLayout({ ...spec, outputs: { prefix: spec.outputs.prefix } }).resultsPointer.key)).to.have.property("complete", true);
  });
});
