/**
 * What a real container (podman + runc, moto S3) sees of its inputs and what the record says: with `select`, only the
 * selected files at their relative paths (the decoy fieldmap, sidecars and second run of the synthetic ABCD archive
 * stay unseen), the whole input with `mount: "all"`; provenance holds each selected file's own hash and the command as
 * run; and a pull that finished is recorded with its digest even when an input fails afterwards.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { expect } from "chai";
import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { jobLayout } from "../job/layout";
import type { AgentStatus } from "../job/records";
import { parseJobSpec, type JobSpec, type JobSpecInput } from "../job/spec";
import { runAgentJob } from "../agent/run";
import { podmanAvailable, podmanTestEnv, type PodmanEnv } from "../sandbox/podman";
import { getBytes, getJson, makeAbcdArchive, newBucket, put, sharedMoto, testS3, type AbcdArchive } from "./support/fixtures";
import { craftZip, fileEntry } from "./support/zip";

const GUID = "NDARINVMNT12345";
const SES = "ses-baselineYear1Arm1";
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const ENV_VALUE = "env-value-that-must-not-reach-records";

/** Lists the inputs, reads every file it is given, and tries to write into its input. No braces (placeholders). */
const SCRIPT = `
out="$1"; shift
ls -R /data/inputs > "$out/seen.txt"
for f in "$@"; do sha256sum "$f" >> "$out/read.txt"; done
if (echo x > /data/inputs/t1/written) 2>/dev/null; then echo writable; else echo read-only; fi > "$out/ro.txt"
`;

describe("what the container sees of its inputs (moto S3 + podman)", function () {
  this.timeout(120_000);
  let s3: S3Client;
  let bucket: string;
  let podman: PodmanEnv;
  let archive: AbcdArchive;
  let counter = 0;
  const dirs: string[] = [];
  const fieldmap = `sub-${GUID}/${SES}/fmap/sub-${GUID}_${SES}_fieldmap.nii`;
  const run02 = `sub-${GUID}/${SES}/anat/sub-${GUID}_${SES}_run-02_T1w.nii`;

  before(async function () {
    if (!podmanAvailable()) this.skip();
    await sharedMoto();
    podman = await podmanTestEnv();
    s3 = testS3();
    bucket = await newBucket(s3, "cc-mounts");
    archive = await makeAbcdArchive(GUID, { dims: [8, 8, 8], extra: { [fieldmap]: "decoy fieldmap", [run02]: Buffer.alloc(352, 1) } });
    await put(s3, bucket, `in/${archive.name}`, archive.tgz);
  });
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  function makeSpec(inputs: JobSpecInput["inputs"]): JobSpec {
    const n = ++counter;
    return parseJobSpec({
      apiVersion: "cloudcompute/v1",
      jobId: `job-${GUID}-m${process.pid}-${n}`,
      subject: GUID,
      inputs,
      container: { image: podman.registryImage, runtime: "podman", command: ["sh", "-c", SCRIPT, "job", "{output}", "{inputs}"], env: { CC_VALUE: ENV_VALUE } },
      outputs: { prefix: `s3://${bucket}/derivatives/m-${n}` },
      instance: { type: "m5.large", region: "us-east-1" },
    });
  }

  async function runJob(spec: JobSpec) {
    const workdir = mkdtempSync(path.join(tmpdir(), "cc-mounts-"));
    dirs.push(workdir);
    const result = await runAgentJob(spec, { workdir, client: testS3(), statusIntervalMs: 100, logIntervalMs: 500 });
    const layout = jobLayout(spec);
    const output = async (name: string) => (await getBytes(s3, bucket, `${layout.results.key}${name}`)).toString();
    return { ...result, output, provenanceText: (await getBytes(s3, bucket, layout.provenance.key)).toString() };
  }

  it("select: the container sees only the selected file at its relative path, read-only; provenance has its hash and the command", async () => {
    const spec = makeSpec([{ name: "t1", url: `s3://${bucket}/in/${archive.name}`, select: "**/*_run-01_T1w.nii" }]);
    const { marker, provenance, output, provenanceText } = await runJob(spec);
    expect(marker.outcome, marker.message).to.equal("succeeded");
    const seen = await output("seen.txt");
    expect(seen).to.include(path.posix.basename(archive.t1w));
    for (const decoy of ["fieldmap", "_T1w.json", "README", "run-02", "fmap"]) expect(seen, decoy).not.to.include(decoy);
    expect(await output("read.txt")).to.equal(`${sha256(archive.nifti)}  /data/inputs/t1/${archive.t1w}\n`);
    expect(await output("ro.txt")).to.equal("read-only\n");

    expect(provenance.inputs[0].mount).to.equal("selected");
    expect(provenance.inputs[0].selected).to.deep.equal([{ path: archive.t1w, sha256: sha256(archive.nifti), bytes: archive.nifti.length }]);
    expect(provenance.inputs[0].files, "the record still lists the whole archive").to.include(fieldmap);
    expect(provenance.command).to.deep.equal(["sh", "-c", SCRIPT, "job", "/data/outputs", `/data/inputs/t1/${archive.t1w}`]);
    expect(provenanceText).not.to.include(ENV_VALUE);
  });

  it('mount "all": the same selection, but the container sees the whole archive', async () => {
    const spec = makeSpec([{ name: "t1", url: `s3://${bucket}/in/${archive.name}`, select: "**/*_run-01_T1w.nii", mount: "all" }]);
    const { marker, provenance, output } = await runJob(spec);
    expect(marker.outcome, marker.message).to.equal("succeeded");
    const seen = await output("seen.txt");
    for (const visible of [path.posix.basename(archive.t1w), "fieldmap.nii", "_T1w.json", "README.txt", "run-02_T1w.nii"]) expect(seen, visible).to.include(visible);
    expect(await output("read.txt")).to.equal(`${sha256(archive.nifti)}  /data/inputs/t1/${archive.t1w}\n`);
    expect(provenance.inputs[0].mount).to.equal("all");
    expect(provenance.inputs[0].selected!.map((f) => f.path)).to.deep.equal([archive.t1w]);
  });

  it("a zip with several selected files: each at its own relative path, nothing else, each hash recorded", async () => {
    const zip = craftZip([
      fileEntry("sub-01/anat/sub-01_run-01_T1w.nii", "run one"),
      fileEntry("sub-01/anat/sub-01_run-02_T1w.nii", "run two", 0),
      fileEntry("sub-01/anat/sub-01_run-01_T1w.json", "{}"),
      fileEntry("sub-01/fmap/sub-01_fieldmap.nii", "decoy"),
    ]);
    await put(s3, bucket, "in/sub-01.zip", zip);
    const spec = makeSpec([{ name: "t1", url: `s3://${bucket}/in/sub-01.zip`, select: "**/*_T1w.nii", allowMultiple: true }]);
    const { marker, provenance, output } = await runJob(spec);
    expect(marker.outcome, marker.message).to.equal("succeeded");
    const seen = await output("seen.txt");
    expect(seen).to.include("sub-01_run-01_T1w.nii").and.include("sub-01_run-02_T1w.nii");
    for (const decoy of ["json", "fmap", "fieldmap"]) expect(seen, decoy).not.to.include(decoy);
    expect(await output("read.txt")).to.equal(
      `${sha256("run one")}  /data/inputs/t1/sub-01/anat/sub-01_run-01_T1w.nii\n${sha256("run two")}  /data/inputs/t1/sub-01/anat/sub-01_run-02_T1w.nii\n`,
    );
    expect(provenance.inputs[0]).to.deep.include({ sha256: sha256(zip), mount: "selected" });
    expect(provenance.inputs[0].selected).to.deep.equal([
      { path: "sub-01/anat/sub-01_run-01_T1w.nii", sha256: sha256("run one"), bytes: 7 },
      { path: "sub-01/anat/sub-01_run-02_T1w.nii", sha256: sha256("run two"), bytes: 7 },
    ]);
  });

  it("records the image digest of a finished pull when an input fails after it", async () => {
    // The input's server answers only once the agent's status says the pull has ended, and then with a 404.
    let server: Server | undefined;
    const spec = makeSpec([{ name: "t1", url: "https://example.invalid/x.nii", access: "presigned", extract: "none" }]);
    const layout = jobLayout(spec);
    const pullEnded = async () => {
      for (;;) {
        const status = await getJson<AgentStatus>(s3, layout.status.bucket, layout.status.key).catch(() => undefined);
        if (status?.phases.pull?.endedAt) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    try {
      server = createServer((req, res) => {
        void pullEnded().then(() => res.writeHead(404).end("NoSuchKey"));
      });
      await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as { port: number }).port;
      spec.inputs[0].url = `http://127.0.0.1:${port}/b/x.nii?X-Amz-Signature=abc`; // the spec wants https; the agent takes http
      const { marker, provenance } = await runJob(spec);
      expect(marker.outcome).to.equal("failed");
      expect(marker.reason, marker.message).to.equal("missing-input");
      expect(provenance.image!.reference).to.equal(podman.registryImage);
      expect(provenance.image!.digest).to.match(/^sha256:[0-9a-f]{64}$/);
      expect(provenance.inputs).to.deep.equal([]);
      expect(provenance.command).to.equal(undefined);
    } finally {
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
    }
  });
});
