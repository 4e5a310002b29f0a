/**
 * `--input-profile`: the driver signs `{url: s3://…, access: presigned}` inputs with a local AWS profile (temporary
 * AWS config and credentials files here), for as long as the job may need them; the URL reads the object from moto
 * with a byte range as the agent does; temporary credentials that die before the job could end are refused; without
 * the flag such an input is refused naming it. The signed URL never reaches the printed (dry-run) spec.
 */
import { expect } from "chai";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { InputSigner, resolveJobSigned } from "../driver/input-signing";
import { RegionCache } from "../driver/regions";
import { BadInputError } from "../driver/errors";
import { newBucket, put, sharedMoto, testS3 } from "./support/fixtures";

const SUBJECT = "NDARINV0000AAAA";

describe("--input-profile: the driver signs s3:// inputs with a local profile", function () {
  this.timeout(60_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-signing-"));
  const saved: Record<string, string | undefined> = {};
  let bucket: string;

  const setEnv = (values: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(values)) {
      if (!(name in saved)) saved[name] = process.env[name];
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };

  before(async () => {
    await sharedMoto();
    const s3 = testS3();
    bucket = await newBucket(s3, "cc-signing");
    await put(s3, bucket, `abcd/${SUBJECT}.nii`, "0123456789abcdef");
    const later = new Date(Date.now() + 3600_000).toISOString();
    const temporary = `node -e 'console.log(JSON.stringify({Version:1,AccessKeyId:"ASIATEMPORARY",SecretAccessKey:"s",SessionToken:"t",Expiration:"${later}"}))'`;
    fs.writeFileSync(path.join(tmp, "credentials"), "[lab]\naws_access_key_id = AKIALABPROFILE\naws_secret_access_key = lab-secret\n");
    fs.writeFileSync(path.join(tmp, "config"), `[profile lab]\nregion = us-east-1\n\n[profile short]\ncredential_process = ${temporary}\n`);
    setEnv({ AWS_CONFIG_FILE: path.join(tmp, "config"), AWS_SHARED_CREDENTIALS_FILE: path.join(tmp, "credentials") });
  });
  after(() => setEnv(Object.fromEntries(Object.entries(saved))));

  it("signs with the profile's keys (not the environment's), for the bucket's region, and the URL reads a byte range", async () => {
    const signer = await InputSigner.forProfile("lab");
    const placeholder = signer.sign(`s3://${bucket}/abcd/${SUBJECT}.nii`, 17_700);
    expect(placeholder).to.match(/^https:\/\/placeholder\.invalid\//);
    expect(signer.pending).to.equal(1);
    await signer.signPending();
    const url = signer.sign(`s3://${bucket}/abcd/${SUBJECT}.nii`, 17_700);
    const params = new URL(url).searchParams;
    expect(params.get("X-Amz-Credential")).to.match(/^AKIALABPROFILE\/\d{8}\/us-east-1\/s3\/aws4_request$/);
    expect(params.get("X-Amz-Expires")).to.equal("17760"); // a minute of slack: X-Amz-Date counts whole seconds
    expect(signer.warnings).to.deep.equal([]);
    const res = await fetch(url, { headers: { Range: "bytes=4-7" } });
    expect(res.status).to.equal(206);
    expect(await res.text()).to.equal("4567");
  });

  it("refuses temporary credentials that expire before the job could end: the URL would die with them", async () => {
    const signer = await InputSigner.forProfile("short");
    expect(() => signer.sign(`s3://${bucket}/abcd/x.nii`, 17_700)).to.throw(/its credentials are temporary and expire at .*before the job could end.*a URL signed with temporary credentials dies with them/);
    expect(signer.sign(`s3://${bucket}/abcd/x.nii`, 600)).to.match(/^https:\/\/placeholder\.invalid\//);
  });

  it("asks the bucket's region with the profile's keys (the default credentials may not see the bucket)", async () => {
    const asked: Array<string | undefined> = [];
    const regions = new RegionCache(async (_bucket, _anonymous, credentials) => (asked.push(credentials?.accessKeyId), { region: "us-west-2" }));
    const signer = await InputSigner.forProfile("lab", regions);
    signer.sign("s3://lab-only/abcd/x.nii", 17_700);
    await signer.signPending();
    expect(asked).to.deep.equal(["AKIALABPROFILE"]);
    expect(new URL(signer.sign("s3://lab-only/abcd/x.nii", 17_700)).searchParams.get("X-Amz-Credential")).to.match(/\/us-west-2\/s3\//);
  });

  it("an unknown profile is bad input naming it", async () => {
    let error: unknown;
    await InputSigner.forProfile("no-such-profile").catch((err) => (error = err));
    expect(error).to.be.instanceOf(BadInputError);
    expect((error as Error).message).to.match(/^--input-profile no-such-profile: its credentials cannot be loaded: .*aws configure list-profiles/);
  });

  describe("through resolveJob (AWS's own hosts: no endpoint)", () => {
    const config = path.join(tmp, "job.yaml");
    before(() => {
      fs.writeFileSync(
        config,
        `config:\n  aws:region: us-east-1\n  cloudcompute:image: neuronets/kwyk:latest-cpu\n  cloudcompute:outputPrefix: s3://lab-results/kwyk\n  cloudcompute:instanceType: m5.4xlarge\n` +
          `  cloudcompute:inputs:\n    - {name: t1, url: "s3://NDAR_Central_2/sub/{subject}_T1.tgz", access: presigned}\n`,
      );
      setEnv({ AWS_ENDPOINT_URL: undefined, AWS_ENDPOINT_URL_S3: undefined });
    });
    // The bucket's region as HeadBucket would say, without the network.
    const regions = () => new RegionCache(async (name) => (name === "NDAR_Central_2" ? { region: "us-east-1" } : { why: "offline" }));

    it("puts an https URL living boot allowance + max runtime + grace + margin into the spec", async () => {
      const signer = await InputSigner.forProfile("lab", regions());
      const job = await resolveJobSigned({ config, subject: SUBJECT, maxRuntime: 60 }, new Date(), {}, signer);
      const url = new URL(job.spec.inputs[0].url);
      expect(url.origin + url.pathname).to.equal(`https://s3.us-east-1.amazonaws.com/NDAR_Central_2/sub/${SUBJECT}_T1.tgz`);
      expect(url.searchParams.get("X-Amz-Expires")).to.equal(String((15 + 60 + 10 + 30) * 60 + 60));
      expect(job.spec.inputs[0].access).to.equal("presigned");
      // Shown redacted: the origin names the object and the expiry a dry run is checked for.
      expect(job.spec.inputs[0].origin).to.match(new RegExp(`^s3://NDAR_Central_2/sub/${SUBJECT}_T1\\.tgz signed by the driver \\(--input-profile\\); URL expires \\d{4}-\\d\\d-\\d\\dT`));
    });

    it("without --input-profile the input is refused, naming the flag; a max runtime past 7 days is refused", async () => {
      let error: unknown;
      await resolveJobSigned({ config, subject: SUBJECT }, new Date(), {}).catch((err) => (error = err));
      expect((error as Error).message).to.match(/cloudcompute:inputs\[0\]: s3:\/\/NDAR_Central_2\/sub\/NDARINV0000AAAA_T1\.tgz with access "presigned" is signed by the driver: give --input-profile NAME/);
      const signer = await InputSigner.forProfile("lab", regions());
      error = undefined;
      await resolveJobSigned({ config, subject: SUBJECT, maxRuntime: 10_080 }, new Date(), {}, signer).catch((err) => (error = err));
      expect((error as Error).message).to.match(/longer than a presigned URL can live \(7 days\): give a shorter --max-runtime/);
    });
  });
});
