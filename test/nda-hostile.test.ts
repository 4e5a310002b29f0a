/**
 * `--nda-package` against a hostile or broken NDA service (sandbox/fake-nda.ts with its faults): a manifest row that
 * points a subject at another subject's file, presigned URLs that are not https or carry user info, an --nda-api with
 * credentials in it, error bodies echoing the Authorization header, a metadata file that inflates without end.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { gzipSync } from "node:zlib";
import { NdaApiError, NdaClient, parseMetadataCsv } from "../driver/nda-client";
import { packageRequest, resolvePackageJob } from "../driver/nda-package";
import { BadInputError } from "../driver/errors";
import { makeAbcdPackage, startFakeNda, type FakeNda } from "../sandbox/fake-nda";

const FMRI = fs.readFileSync(path.join(__dirname, "fixtures", "fmriresults01.txt"), "utf8");
const USER = "labuser";
const PASSWORD = "nda-Pa55word-hostile-7f3a";
const BASIC = Buffer.from(`${USER}:${PASSWORD}`).toString("base64");
const A_BASELINE_T1 = "s3://NDAR_Central_2/submission_14921/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118.tgz";
const Z_BASELINE_T1 = "s3://NDAR_Central_1/submission_10101/NDARINVZZ99YY88_baselineYear1Arm1_ABCD-MPROC-T1_20170101090000.tgz";

const failure = (p: Promise<unknown>) => p.then(() => new Error("no error"), (e: Error) => e);

describe("NDA package support against a hostile NDA service", function () {
  this.timeout(60_000);
  let nda: FakeNda;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-nda-hostile-"));
  const config = path.join(tmp, "Pulumi.nda.yaml");
  fs.writeFileSync(config, `config:\n  aws:region: us-east-1\n  cloudcompute:image: neuronets/kwyk:latest-cpu\n  cloudcompute:outputPrefix: s3://lab-results/kwyk\n  cloudcompute:instanceType: m5.4xlarge\n  cloudcompute:platform: local\n`);
  const flags = (pkg = "1234567") => ({ config, subject: "NDARINVA1B2C3D4", ndaPackage: pkg, ndaApi: nda.apiUrl, dataType: "ABCD-MPROC-T1", session: "baselineYear1Arm1" });
  const client = (overrides: Partial<ConstructorParameters<typeof NdaClient>[0]> = {}) =>
    new NdaClient({ baseUrl: nda.apiUrl, credentials: { username: USER, password: PASSWORD }, ca: nda.ca, pollMs: 10, retryBaseMs: 10, attempts: 2, ...overrides });
  const withCredentials = () => {
    process.env.NDA_USERNAME = USER;
    process.env.NDA_PASSWORD = PASSWORD;
  };

  before(async () => {
    nda = await startFakeNda({ username: USER, password: PASSWORD, packages: [await makeAbcdPackage("1234567", FMRI)] });
    // A's baseline T1 row names subject ZZ99YY88's archive (the package holds both).
    nda.addPackage(await makeAbcdPackage("2345678", FMRI.replace(A_BASELINE_T1, Z_BASELINE_T1)));
  });
  after(async () => {
    delete process.env.NDA_USERNAME;
    delete process.env.NDA_PASSWORD;
    await nda?.close();
  });
  beforeEach(() => {
    for (const key of Object.keys(nda.faults)) delete (nda.faults as Record<string, unknown>)[key];
  });

  it("a manifest row giving this subject another subject's file is refused before any URL is asked for it", async () => {
    withCredentials();
    nda.requests.length = 0;
    const err = await failure(resolvePackageJob(flags("2345678"), { ca: nda.ca }));
    expect(err).to.be.instanceOf(BadInputError);
    expect(err.message).to.include("NDARINVZZ99YY88").and.include("line 3");
    const z = "NDARINVZZ99YY88_baselineYear1Arm1_ABCD-MPROC-T1_20170101090000";
    expect(nda.issued.filter((url) => url.includes(z)), "no URL for the other subject's file").to.deep.equal([]);
  });

  it("a metadata file mapping this subject's S3 URL to another subject's file id: the URL NDA signs names the other subject, refused", async () => {
    withCredentials();
    const z = (await makeAbcdPackage("3456789", FMRI)).files.find((f) => f.s3Url === Z_BASELINE_T1)!;
    nda.addPackage({ ...(await makeAbcdPackage("3456789", FMRI)), metadataReady: true });
    nda.faults.metadataS3Url = { [z.id]: A_BASELINE_T1 };
    const err = await failure(resolvePackageJob(flags("3456789"), { ca: nda.ca }));
    expect(err).to.be.instanceOf(BadInputError);
    expect(err.message).to.include("NDARINVZZ99YY88").and.include(`file id ${z.id}`);
    expect(err.message).not.to.include("X-Amz-Signature=").and.not.include(PASSWORD);
  });

  it("an --nda-api holding user:password@ is refused, and the error does not repeat it", () => {
    let err: Error | undefined;
    try {
      new NdaClient({ baseUrl: `https://${USER}:${PASSWORD}@127.0.0.1:1/api/package`, credentials: { username: USER, password: PASSWORD } });
    } catch (e) {
      err = e as Error;
    }
    expect(err).to.be.instanceOf(BadInputError);
    expect(err!.message).to.include("user name or password").and.not.include(PASSWORD);
  });

  it("presigned URLs that are not https, or carry user info, are refused; the password never in the error", async () => {
    nda.faults.rewriteUrl = (url) => url.replace(/^https:\/\//, `https://${USER}:${PASSWORD}@`);
    const withUser = await failure(client().presign("1234567", ["3000000002"]));
    expect(withUser).to.be.instanceOf(NdaApiError);
    expect(withUser.message).to.include("not a usable presigned URL").and.not.include(PASSWORD);
    const metadata = await failure(client().metadata("1234567"));
    expect(metadata.message).to.include("not a usable presigned URL").and.not.include(PASSWORD);
    nda.faults.rewriteUrl = (url) => url.replace(/^https:/, "http:");
    const plain = await failure(client().metadata("1234567"));
    expect(plain.message).to.include("not a usable presigned URL");
    withCredentials();
    const job = await failure(resolvePackageJob(flags(), { ca: nda.ca }));
    expect(job).to.be.instanceOf(Error);
    expect(job.message).not.to.include(PASSWORD);
  });

  it("an error body echoing the request's Authorization header never reaches the message", async () => {
    nda.faults.echoAuth = true;
    const err = await failure(client().packageInfo("1234567"));
    expect(err).to.be.instanceOf(NdaApiError);
    expect(err.message).to.include("HTTP 500");
    expect(err.message).not.to.include(BASIC).and.not.include(PASSWORD);
  });

  it("a metadata file that inflates past the limit is refused before it is held whole", () => {
    const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x41));
    expect(() => parseMetadataCsv(bomb, "metadata file", 1024 * 1024)).to.throw(NdaApiError, /larger than/);
    // A malformed file is NDA's fault (an NdaApiError, so an infrastructure error), not a crash of the driver.
    expect(() => parseMetadataCsv(Buffer.from('"PACKAGE_FILE_ID","NDA_S3_URL"\n"1"x,"s3://a/b"\n'))).to.throw(NdaApiError, /not a readable CSV/);
    expect(() => parseMetadataCsv(Buffer.from('"PACKAGE_FILE_ID","NDA_S3_URL"\n"1"\n'))).to.throw(NdaApiError, /not a readable CSV/);
  });

  it("an answer larger than the limit is refused (a service that never stops sending cannot exhaust memory)", async () => {
    const url = (await client().presign("1234567", ["3000000002"])).get("3000000002")!;
    const err = await failure(client({ maxResponseBytes: 100 }).download(url, "test"));
    expect(err).to.be.instanceOf(NdaApiError);
    expect(err.message).to.include("more than 100 bytes");
  });

  it("a config file cannot send the NDA password to another host: only --nda-api on the command line names one", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cc-nda-config-"));
    const config = path.join(dir, "Pulumi.shared.yaml");
    fs.writeFileSync(config, "config:\n  cloudcompute:ndaPackage: \"1234567\"\n  cloudcompute:ndaApi: https://nda.nih.gov.attacker.example/api/package\n");
    expect(() => packageRequest({ config })).to.throw(BadInputError, /names nda\.nih\.gov\.attacker\.example, not nda\.nih\.gov: your NDA password would be sent there/);
    // Typed by the user, another host is their choice (a proxy, a test service).
    expect(packageRequest({ config, ndaApi: "https://proxy.lab.example/api/package" })?.api).to.equal("https://proxy.lab.example/api/package");
    fs.writeFileSync(config, "config:\n  cloudcompute:ndaPackage: \"1234567\"\n  cloudcompute:ndaApi: https://nda.nih.gov/api/package\n");
    expect(packageRequest({ config })?.api).to.equal("https://nda.nih.gov/api/package");
  });
});
