/**
 * `--nda-package` against a hostile or broken NDA service (sandbox/fake-nda.ts with its faults): a manifest row that
 * points a subject at another subject's file, presigned URLs that are not https or carry user info, an --nda-api with
 * credentials in it, error bodies echoing the Authorization header, a metadata file that inflates without end.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { resolvePackageJob } from "../driver/nda-package";
import { BadInputError } from "../driver/errors";
import { makeAbcdPackage, startFakeNda, type FakeNda } from "../sandbox/fake-nda";

const FMRI = fs.readFileSync(path.join(__dirname, "fixtures", "fmriresults01.txt"), "utf8");
const USER = "labuser";
const PASSWORD = "nda-Pa55word-hostile-7f3a";
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
});
