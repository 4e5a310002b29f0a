/**
 * NDA manifests to a subject's inputs: realistic fixture rows (every value quoted, the description row, both GUID
 * spellings, two sessions, four buckets, distractor types, a resubmission), the same resolution through `pulumi up`'s
 * reader and the driver's CLI, and the errors a user gets when nothing or too much matches.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ConfigError, specFromConfig } from "../job/config";
import { bidsSubject } from "../job/input-templates";
import { findSubjectFiles, ManifestError, parseNdaManifest, subjectsInManifest } from "../job/nda-manifest";
import { CLI } from "../sandbox/driver-sandbox";

const FIXTURES = path.join(__dirname, "fixtures");
const FMRI = path.join(FIXTURES, "fmriresults01.txt");
const DATASTRUCTURE = path.join(FIXTURES, "datastructure_manifest.txt");
const read = (file: string) => fs.readFileSync(file, "utf8");
const A_BASELINE_T1 = "s3://NDAR_Central_2/submission_14921/NDARINVA1B2C3D4_baselineYear1Arm1_ABCD-MPROC-T1_20170811130118.tgz";

const BASE: Record<string, string> = {
  "aws:region": "us-east-1",
  "cloudcompute:image": "neuronets/kwyk:latest-cpu",
  "cloudcompute:outputPrefix": "s3://lab-results/kwyk",
  "cloudcompute:instanceType": "m5.4xlarge",
};

function spec(config: Record<string, string>) {
  const all = { ...BASE, ...config };
  return specFromConfig((key) => all[key], {}, new Date(), { readFile: (file) => read(path.resolve(FIXTURES, file)) });
}

function problems(config: Record<string, string>): string[] {
  try {
    spec(config);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("accepted");
}

describe("NDA manifests: parsing", () => {
  it("reads fmriresults01.txt: skips the description row, normalises subjectkey, types from columns, sessions and stamps from names", () => {
    const files = parseNdaManifest(read(FMRI), "fmriresults01.txt");
    expect(files).to.have.length(6);
    expect(files[0]).to.deep.equal({ line: 3, subject: "NDARINVA1B2C3D4", url: A_BASELINE_T1, dataType: "ABCD-MPROC-T1", session: "baselineYear1Arm1", stamp: "20170811130118" });
    expect(new Set(files.map((f) => f.url.split("/")[2]))).to.deep.equal(new Set(["NDAR_Central_1", "NDAR_Central_2", "NDAR_Central_3", "NDAR_Central_4"]));
  });

  it("reads datastructure_manifest.txt (CRLF lines, subject and type from the file name)", () => {
    const files = parseNdaManifest(read(DATASTRUCTURE), "datastructure_manifest.txt");
    expect(files.map((f) => [f.subject, f.dataType, f.session])).to.deep.equal([
      ["NDARINVA1B2C3D4", "ABCD-MPROC-T1", "baselineYear1Arm1"],
      ["NDARINVA1B2C3D4", "ABCD-MPROC-T2", "baselineYear1Arm1"],
      ["NDARINVZZ99YY88", "ABCD-MPROC-T1", "baselineYear1Arm1"],
    ]);
  });

  it("refuses a file that is not a manifest, naming the columns it looked for", () => {
    expect(() => parseNdaManifest("a\tb\n1\t2\n", "subjects.csv")).to.throw(ManifestError, /subjects\.csv: no file column \(expected one of derived_files, file_source, associated_file/);
  });
});

describe("NDA manifests: a subject's files", () => {
  const files = parseNdaManifest(read(FMRI), "fmriresults01.txt");

  it("finds one file by type and session, with either GUID spelling", () => {
    for (const subject of ["NDAR_INVA1B2C3D4", "NDARINVA1B2C3D4", "ndar_inva1b2c3d4"]) {
      expect(findSubjectFiles(files, { subject, dataType: "ABCD-MPROC-T1", session: "baselineYear1Arm1", pick: "error" }).map((f) => f.url)).to.deep.equal([A_BASELINE_T1]);
    }
  });

  it("several matches: an error listing them by default; latest takes the newest stamp; all takes each", () => {
    const query = { subject: "NDARINVZZ99YY88", dataType: "ABCD-MPROC-T1", session: "baselineYear1Arm1" };
    expect(() => findSubjectFiles(files, { ...query, pick: "error" })).to.throw(ManifestError, /2 files for subject NDARINVZZ99YY88[\s\S]*--pick latest\|all[\s\S]*NDAR_Central_1[\s\S]*NDAR_Central_3/);
    expect(findSubjectFiles(files, { ...query, pick: "latest" }).map((f) => f.url.split("/")[2])).to.deep.equal(["NDAR_Central_3"]);
    expect(findSubjectFiles(files, { ...query, pick: "all" })).to.have.length(2);
  });

  it("no match: says what was searched and what the subject has instead", () => {
    expect(() => findSubjectFiles(files, { subject: "NDARINVA1B2C3D4", dataType: "ABCD-MPROC-T1", session: "4YearFollowUpYArm1", pick: "error" })).to.throw(
      ManifestError,
      /no file for subject NDARINVA1B2C3D4 with data type ABCD-MPROC-T1 and session 4YearFollowUpYArm1; for this subject it lists data types ABCD-MPROC-DTI, ABCD-MPROC-T1, ABCD-MPROC-T2 and sessions 2YearFollowUpYArm1, baselineYear1Arm1/,
    );
    expect(() => findSubjectFiles(files, { subject: "NDARINV00000000", pick: "error" })).to.throw(ManifestError, /lists no file for subject NDARINV00000000 \(6 file rows read, 2 subjects\)/);
  });
});

describe("NDA manifests and URL templates in the config reader (pulumi up and the driver)", () => {
  it("a manifest alone gives the job its input, with where it came from", () => {
    const s = spec({ "cloudcompute:subject": "NDAR_INVA1B2C3D4", "cloudcompute:manifest": "fmriresults01.txt", "cloudcompute:dataType": "ABCD-MPROC-T1", "cloudcompute:session": "baselineYear1Arm1" });
    expect(s.inputs).to.deep.equal([{ name: "input", url: A_BASELINE_T1, access: "role", extract: "auto", allowMultiple: false, origin: "fmriresults01.txt line 3 (ABCD-MPROC-T1, baselineYear1Arm1)" }]);
  });

  it("an input whose url is {manifest} keeps its own settings; --pick all names the extra inputs", () => {
    const inputs = JSON.stringify([{ name: "t1", url: "{manifest}", extract: "tgz", select: "**/*_T1w.nii" }]);
    const s = spec({ "cloudcompute:subject": "NDARINVZZ99YY88", "cloudcompute:inputs": inputs, "cloudcompute:manifest": "fmriresults01.txt", "cloudcompute:dataType": "ABCD-MPROC-T1", "cloudcompute:pick": "all" });
    expect(s.inputs.map((i) => [i.name, i.extract, i.select, i.url.split("/")[2]])).to.deep.equal([
      ["t1", "tgz", "**/*_T1w.nii", "NDAR_Central_1"],
      ["t1-2", "tgz", "**/*_T1w.nii", "NDAR_Central_3"],
    ]);
  });

  it("errors name the key: no match, a bad pick, an unreadable manifest, {manifest} without one", () => {
    expect(problems({ "cloudcompute:subject": "NDARINVA1B2C3D4", "cloudcompute:manifest": "fmriresults01.txt", "cloudcompute:dataType": "ABCD-MPROC-T3" })[0]).to.match(/^cloudcompute:manifest: fmriresults01\.txt has no file for subject NDARINVA1B2C3D4 with data type ABCD-MPROC-T3/);
    expect(problems({ "cloudcompute:subject": "NDARINVA1B2C3D4", "cloudcompute:manifest": "fmriresults01.txt", "cloudcompute:pick": "newest" })[0]).to.equal('cloudcompute:pick "newest": expected error, latest or all');
    expect(problems({ "cloudcompute:subject": "NDARINVA1B2C3D4", "cloudcompute:manifest": "nope.txt" })[0]).to.match(/^cloudcompute:manifest: nope\.txt cannot be read: ENOENT/);
    expect(problems({ "cloudcompute:subject": "sub-01", "cloudcompute:inputs": "s3://lab/{subject}.nii", "cloudcompute:dataType": "ABCD-MPROC-T1" })[0]).to.match(/^cloudcompute:dataType: needs cloudcompute:manifest \(--manifest FILE\)/);
    expect(problems({ "cloudcompute:subject": "sub-01", "cloudcompute:inputs": '{"url":"{manifest}"}' })[0]).to.match(/^cloudcompute:inputs: an input's url is "\{manifest\}" but no manifest is given/);
  });

  it("a manifest that fills no input is refused: the configured URLs would be read instead, silently", () => {
    // A config written for one subject (Pulumi.dev.yaml) or with {subject} URLs, given --manifest (or --nda-package).
    const config = { "cloudcompute:subject": "NDARINVA1B2C3D4", "cloudcompute:manifest": "fmriresults01.txt", "cloudcompute:dataType": "ABCD-MPROC-T1", "cloudcompute:session": "baselineYear1Arm1" };
    for (const inputs of ["s3://lab/t1/{subject}.tgz", '{"name":"t1","url":"s3://lab/t1/NDARINV1A2B3C4D.tgz"}']) {
      expect(problems({ ...config, "cloudcompute:inputs": inputs })[0]).to.match(/^cloudcompute:inputs: the manifest fmriresults01\.txt .* fills no input: give the input it fills the url "\{manifest\}"/);
    }
  });

  it("{session} and {bids_subject} in a URL; {session} without a session and an unknown placeholder are refused", () => {
    const s = spec({ "cloudcompute:subject": "NDAR_INVA1B2C3D4", "cloudcompute:session": "baselineYear1Arm1", "cloudcompute:inputs": "s3://lab/{bids_subject}/ses-{session}/anat/{subject}_T1w.nii.gz" });
    expect(s.inputs[0].url).to.equal("s3://lab/sub-NDARINVA1B2C3D4/ses-baselineYear1Arm1/anat/NDARINVA1B2C3D4_T1w.nii.gz");
    expect(bidsSubject("sub-01")).to.equal("sub-01");
    expect(problems({ "cloudcompute:subject": "sub-01", "cloudcompute:inputs": "s3://lab/{subject}/ses-{session}.nii" })[0]).to.match(/^cloudcompute:inputs: \{session\} in url needs a session: set cloudcompute:session \(--session\)/);
    expect(problems({ "cloudcompute:subject": "sub-01", "cloudcompute:inputs": "s3://lab/{subjct}.nii" })[0]).to.match(/^cloudcompute:inputs: unknown placeholder \{subjct\} in url \(known: \{subject\} \{session\} \{bids_subject\} \{manifest\}\)/);
    // A glob's own braces are not placeholders.
    expect(spec({ "cloudcompute:subject": "sub-01", "cloudcompute:inputs": '{"url":"s3://lab/{subject}.tgz","select":"**/*.{nii,gz}"}' }).inputs[0].select).to.equal("**/*.{nii,gz}");
  });
});

describe("NDA manifests through the CLI", function () {
  this.timeout(60_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-manifest-"));
  const config = path.join(tmp, "study.yaml");
  fs.writeFileSync(config, `config:\n  aws:region: us-east-1\n  cloudcompute:image: neuronets/kwyk:latest-cpu\n  cloudcompute:outputPrefix: s3://lab-results/kwyk\n  cloudcompute:instanceType: m5.4xlarge\n`);
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, "--config", config, ...args], { encoding: "utf8", env: { ...process.env, CLOUDCOMPUTE_HOME: path.join(tmp, "home") } });

  it("--manifest F --data-type T --session S --dry-run --json prints the resolved URL and access mode, with either GUID spelling", () => {
    for (const subject of ["NDAR_INVA1B2C3D4", "NDARINVA1B2C3D4"]) {
      const res = cli(["--subject", subject, "--manifest", FMRI, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1", "--dry-run", "--json"]);
      expect(res.status, res.stderr).to.equal(0);
      const input = JSON.parse(res.stdout).spec.inputs[0];
      expect(input).to.include({ url: A_BASELINE_T1, access: "role" });
      expect(input.origin).to.include("fmriresults01.txt line 3");
    }
    expect(fs.existsSync(path.join(tmp, "home", "state")), "nothing created").to.equal(false);
  });

  it("no match is exit 2 with the near misses; several without --pick is exit 2 listing them", () => {
    const none = cli(["--subject", "NDARINVA1B2C3D4", "--manifest", FMRI, "--data-type", "ABCD-MPROC-T1", "--session", "6YearFollowUpYArm1", "--dry-run"]);
    expect(none.status).to.equal(2);
    expect(none.stderr).to.include("sessions 2YearFollowUpYArm1, baselineYear1Arm1");
    const many = cli(["--subject", "NDARINVZZ99YY88", "--manifest", DATASTRUCTURE, "--dry-run"]);
    expect(many.status, many.stderr).to.equal(0); // datastructure_manifest lists one file for this subject
    const several = cli(["--subject", "NDARINVZZ99YY88", "--manifest", FMRI, "--data-type", "ABCD-MPROC-T1", "--dry-run"]);
    expect(several.status).to.equal(2);
    expect(several.stderr).to.include("2 files for subject NDARINVZZ99YY88").and.include("narrow it with --session, or choose with --pick latest|all");
  });

  it("--all-subjects runs every subject with a matching file and lists the excluded ones with their reason, in the table and the JSON", () => {
    const res = cli(["--all-subjects", "--manifest", FMRI, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1", "--dry-run", "--json"]);
    expect(res.status, res.stderr).to.equal(0);
    const out = JSON.parse(res.stdout);
    expect(out.subjects).to.deep.equal(["NDARINVA1B2C3D4"]);
    expect(out.jobs.map((job: any) => job.spec.inputs[0].url)).to.deep.equal([A_BASELINE_T1]);
    expect(out.excluded).to.deep.equal([{ subject: "NDARINVZZ99YY88", reason: "has 2 files for subject NDARINVZZ99YY88 with data type ABCD-MPROC-T1 and session baselineYear1Arm1: choose with --pick latest|all" }]);
    expect(res.stderr).to.match(/--all-subjects: 1 subject\(s\) included, 1 excluded\n\s+subject\s+reason\n\s+NDARINVZZ99YY88\s+has 2 files/);
    const latest = JSON.parse(cli(["--all-subjects", "--manifest", FMRI, "--data-type", "ABCD-MPROC-T1", "--session", "baselineYear1Arm1", "--pick", "latest", "--dry-run", "--json"]).stdout);
    expect(latest.subjects).to.deep.equal(["NDARINVA1B2C3D4", "NDARINVZZ99YY88"]);
    expect(latest.excluded).to.deep.equal([]);
    expect(fs.existsSync(path.join(tmp, "home", "state")), "nothing created").to.equal(false);
  });

  it("--all-subjects is refused with --subject, with --subjects-file, without a manifest, and when no subject matches", () => {
    const subjects = path.join(tmp, "subjects.txt");
    fs.writeFileSync(subjects, "NDARINVA1B2C3D4\n");
    const cases: Array<[string[], RegExp]> = [
      [["--all-subjects", "--manifest", FMRI, "--subject", "NDARINVA1B2C3D4"], /give either --subject or --all-subjects, not both/],
      [["--all-subjects", "--manifest", FMRI, "--subjects-file", subjects], /give either --subjects-file or --all-subjects, not both/],
      [["--all-subjects"], /--all-subjects takes its subjects from a manifest: give --manifest FILE/],
      [["--all-subjects", "--manifest", FMRI, "--data-type", "ABCD-MPROC-FLAIR"], /no subject has a file with data type ABCD-MPROC-FLAIR \(2 subjects, 2 excluded\)/],
    ];
    for (const [args, message] of cases) {
      const res = cli([...args, "--dry-run"]);
      expect(res.status, res.stderr).to.equal(2);
      expect(res.stderr).to.match(message);
    }
  });
});

describe("subjectsInManifest: every subject of parsed rows, each exclusion with its reason", () => {
  const files = parseNdaManifest(read(FMRI), "fmriresults01.txt");

  it("includes subjects whose files match the filters and excludes the others, saying why", () => {
    const followUp = subjectsInManifest(files, { dataType: "ABCD-MPROC-T1", session: "2YearFollowUpYArm1", pick: "error" }, "fmriresults01.txt");
    expect(followUp.included).to.deep.equal(["NDARINVA1B2C3D4"]);
    expect(followUp.excluded).to.have.length(1);
    expect(followUp.excluded[0].subject).to.equal("NDARINVZZ99YY88");
    expect(followUp.excluded[0].reason).to.match(/^has no file for subject NDARINVZZ99YY88 with data type ABCD-MPROC-T1 and session 2YearFollowUpYArm1; for this subject it lists data types ABCD-MPROC-T1 and sessions baselineYear1Arm1$/);
    expect(subjectsInManifest(files, { pick: "all" }).included).to.deep.equal(["NDARINVA1B2C3D4", "NDARINVZZ99YY88"]);
  });

  it("a row with no subject is excluded by its line; no subject at all is an error", () => {
    const rows = [...files, { line: 99, url: "s3://lab/unnamed.tgz" }];
    const selection = subjectsInManifest(rows, { pick: "all" });
    expect(selection.excluded).to.deep.equal([{ subject: "(line 99)", reason: "no subject: no subjectkey and no NDA GUID in the file name unnamed.tgz" }]);
    expect(() => subjectsInManifest(files, { dataType: "NOPE", pick: "error" }, "m.txt")).to.throw(ManifestError, /m\.txt: no subject has a file with data type NOPE/);
  });
});
