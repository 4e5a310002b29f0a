/**
 * The job model the stack program stands on: subject normalisation, spec round-trip, S3 layout and stack names.
 */
import { expect } from "chai";
import { agentBundleLocation, jobIdTime, jobLayout, makeJobId, markerUrl } from "../job/layout";
import { JobSpecError, parseJobSpec, redactSpec, serialiseJobSpec, specHasSecrets } from "../job/spec";
import { normaliseSubject, parseSubject } from "../job/subject";
import { BIDS_VERSION, datasetDescription, pinnedReference } from "../job/bids";
import { kwykSpec, PRESIGNED_URL } from "./support/job-specs";

/** Pulumi's stack name rule. */
const STACK_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

describe("job model", () => {
  describe("subjects", () => {
    it("normalises both NDA spellings to the file-name form", () => {
      expect(normaliseSubject("NDAR_INV1A2B3C4D")).to.equal("NDARINV1A2B3C4D");
      expect(normaliseSubject("NDARINV1A2B3C4D")).to.equal("NDARINV1A2B3C4D");
      expect(normaliseSubject(" ndar_inv1a2b3c4d ")).to.equal("NDARINV1A2B3C4D");
      expect(parseSubject("NDARINV1A2B3C4D")).to.deep.equal({ id: "NDARINV1A2B3C4D", ndaSubjectKey: "NDAR_INV1A2B3C4D" });
    });

    it("refuses malformed NDA GUIDs with what a GUID looks like", () => {
      for (const bad of ["NDAR_INV1A2B3C4", "NDARINV1A2B3C4D5", "NDAR_INV1A2B-C4D", "NDAR__INV1A2B3C4D"]) {
        expect(() => normaliseSubject(bad), bad).to.throw(/looks like an NDA GUID but is malformed.*NDARINVXXXXXXXX/);
      }
    });

    it("keeps BIDS and other safe ids as given, refuses unsafe ones", () => {
      expect(normaliseSubject("sub-01")).to.equal("sub-01");
      expect(normaliseSubject("100307")).to.equal("100307");
      for (const bad of ["", "_cloudcompute", "sub 01", "../etc", "sub/01"]) {
        expect(() => normaliseSubject(bad), bad).to.throw(/not a valid subject id/);
      }
    });
  });

  describe("spec", () => {
    it("round-trips: serialise then parse gives the same spec", () => {
      for (const spec of [kwykSpec(), kwykSpec({ container: { gpus: 1, env: { A: "b" } }, instance: { type: "g5.xlarge", spot: true } })]) {
        const text = serialiseJobSpec(spec);
        expect(parseJobSpec(JSON.parse(text))).to.deep.equal(spec);
        expect(serialiseJobSpec(parseJobSpec(JSON.parse(text)))).to.equal(text);
      }
    });

    it("names every bad field in one error", () => {
      const bad = { ...JSON.parse(serialiseJobSpec(kwykSpec())), instance: { type: "x", region: "moon" }, inputs: [] };
      try {
        parseJobSpec(bad);
        expect.fail("accepted");
      } catch (err) {
        expect(err).to.be.instanceOf(JobSpecError);
        const fields = (err as JobSpecError).problems.map((p) => p.split(":")[0]);
        expect(fields).to.include.members(["inputs", "instance.type", "instance.region"]);
      }
    });

    it("extracts zips (auto for .zip, or extract zip), and mounts only the selected files unless mount is all", () => {
      const base = JSON.parse(serialiseJobSpec(kwykSpec()));
      const parse = (input: Record<string, unknown>) => parseJobSpec({ ...base, inputs: [input] }).inputs[0];
      expect(parse({ name: "t1", url: "s3://bucket/subject.zip" }).extract).to.equal("auto");
      expect(parse({ name: "t1", url: "s3://bucket/subject.bin", extract: "zip" }).extract).to.equal("zip");
      expect(parse({ name: "t1", url: "s3://bucket/subject.zip", extract: "none" }).extract).to.equal("none");
      expect(parse({ name: "t1", url: "s3://bucket/a.tgz", select: "**/*.nii" }).mount).to.equal(undefined); // "selected"
      expect(parse({ name: "t1", url: "s3://bucket/a.tgz", select: "**/*.nii", mount: "all" }).mount).to.equal("all");
      expect(() => parse({ name: "t1", url: "s3://bucket/a.tgz", mount: "some" })).to.throw(/inputs\[0\]\.mount/);
    });

    it("treats presigned URLs as secrets and redacts them", () => {
      const spec = kwykSpec({ inputs: [{ name: "t1", url: PRESIGNED_URL, access: "presigned" }] });
      expect(specHasSecrets(spec)).to.equal(true);
      expect(specHasSecrets(kwykSpec())).to.equal(false);
      expect(JSON.stringify(redactSpec(spec))).not.to.contain("X-Amz-Signature");
    });
  });

  describe("what the spec refuses or hides (issue #7)", () => {
    const problemsOf = (changes: Record<string, unknown>): string[] => {
      try {
        parseJobSpec({ ...JSON.parse(serialiseJobSpec(kwykSpec())), ...changes });
        return [];
      } catch (err) {
        return (err as JobSpecError).problems;
      }
    };

    it("reserves the job ids that name shared folders of the job area (the agent bundles)", () => {
      for (const id of ["agent", "AGENT", "subjects"]) expect(problemsOf({ jobId: id }).join(), id).to.match(/^jobId: .*reserved/);
      expect(problemsOf({ jobId: "agent-1" })).to.deep.equal([]);
    });

    it("checks label names and values against AWS tag rules", () => {
      expect(problemsOf({ labels: { study: "x".repeat(257) } }).join()).to.match(/labels\.study: a label value holds at most 256/);
      expect(problemsOf({ labels: { study: "abcd;rm -rf" } }).join()).to.match(/labels\.study: a label value may hold only/);
      expect(problemsOf({ labels: { ["k".repeat(129)]: "v" } }).join()).to.match(/^labels\.k{129}: /);
      expect(problemsOf({ labels: { "cost-center": "NIMH grant R01-MH123456 / ABCD" } })).to.deep.equal([]);
    });

    it("refuses env values with line breaks (they travel in an env file)", () => {
      const spec = JSON.parse(serialiseJobSpec(kwykSpec()));
      expect(problemsOf({ container: { ...spec.container, env: { TOKEN: "a\nB=c" } } }).join()).to.match(/container\.env\.TOKEN: an environment value may not contain line breaks/);
    });

    it("treats env values as secrets: the spec goes secret into state, and printed specs hide the values", () => {
      const spec = kwykSpec({ container: { env: { API_TOKEN: "tok-123456" } } });
      expect(specHasSecrets(spec)).to.equal(true);
      expect(specHasSecrets(kwykSpec())).to.equal(false);
      expect(JSON.stringify(redactSpec(spec))).not.to.include("tok-123456");
      expect(redactSpec(spec).container.env).to.deep.equal({ API_TOKEN: "<redacted>" });
    });
  });

  describe("layout and stack names", () => {
    it("makes job ids that are valid stack names and sort by time", () => {
      const early = makeJobId("NDARINV1A2B3C4D", new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)));
      const late = makeJobId("NDARINV1A2B3C4D", new Date(Date.UTC(2026, 10, 25, 12, 0, 0, 0)));
      expect(early).to.equal("job-NDARINV1A2B3C4D-20260102T030405006Z");
      expect(early).to.match(STACK_NAME);
      expect([late, early].sort()).to.deep.equal([early, late]);
      expect(jobIdTime(early)?.toISOString()).to.equal("2026-01-02T03:04:05.006Z");
      expect(makeJobId("x".repeat(64))).to.match(STACK_NAME);
    });

    it("puts results under <prefix>/<subject>/ and the private area under _cloudcompute/<jobId>/", () => {
      const spec = kwykSpec({ jobId: "job-a" });
      const layout = jobLayout(spec);
      expect(layout.results).to.deep.equal({ bucket: "lab-results-bucket", key: "kwyk/NDARINV1A2B3C4D/" });
      expect(layout.control.key).to.equal("kwyk/_cloudcompute/job-a/");
      expect([layout.spec, layout.status, layout.log, layout.provenance, layout.marker].map((l) => l.key)).to.deep.equal([
        "kwyk/_cloudcompute/job-a/spec.json",
        "kwyk/_cloudcompute/job-a/status.json",
        "kwyk/_cloudcompute/job-a/agent.log",
        "kwyk/_cloudcompute/job-a/provenance.json",
        "kwyk/_cloudcompute/job-a/marker.json",
      ]);
      expect(markerUrl(spec)).to.equal("s3://lab-results-bucket/kwyk/_cloudcompute/job-a/marker.json");
      expect(agentBundleLocation("s3://lab-results-bucket/kwyk/", "ab".repeat(32)).key).to.equal(
        `kwyk/_cloudcompute/agent/agent-${"ab".repeat(32)}.js`,
      );
    });

    it("layout bids: results under sub-<label>/ (a GUID's label without '_'), the pointer beside that folder, dataset_description.json at the prefix", () => {
      const plain = jobLayout(kwykSpec({ jobId: "job-a" }));
      expect(kwykSpec().outputs.layout, "the default").to.equal("subject");
      expect(plain.datasetDescription).to.equal(undefined);
      const bids = jobLayout(kwykSpec({ jobId: "job-a", outputs: { layout: "bids" } }));
      expect(bids.results).to.deep.equal({ bucket: "lab-results-bucket", key: "kwyk/sub-NDARINV1A2B3C4D/" });
      expect(bids.resultsPointer.key).to.equal("kwyk/_cloudcompute/subjects/sub-NDARINV1A2B3C4D/results.json");
      expect(bids.datasetDescription).to.deep.equal({ bucket: "lab-results-bucket", key: "kwyk/dataset_description.json" });
      // Only the results folder moves: the control area and the records stay where every reader looks for them.
      expect([bids.control, bids.marker, bids.outputs, bids.spec]).to.deep.equal([plain.control, plain.marker, plain.outputs, plain.spec]);
      expect(plain.resultsPointer.key).to.equal("kwyk/_cloudcompute/subjects/NDARINV1A2B3C4D/results.json");
      const sub01 = kwykSpec({ subject: "sub-01", outputs: { layout: "bids" } });
      expect(jobLayout(sub01).results.key).to.equal("kwyk/sub-01/");
      expect(jobLayout({ ...sub01, outputs: { prefix: sub01.outputs.prefix } }).results.key, "layout left out: subject").to.equal("kwyk/sub-01/");
      expect(jobLayout(kwykSpec({ subject: "HCP_100307", outputs: { layout: "bids" } })).results.key).to.equal("kwyk/sub-HCP100307/");
    });

    it("layout bids refuses a subject whose folder would not be a BIDS label, naming the subject and the way out", () => {
      for (const subject of ["sub-01_run2", "sub-a.b"]) {
        try {
          kwykSpec({ subject, outputs: { layout: "bids" } });
          expect.fail(`${subject} accepted`);
        } catch (err) {
          expect(err).to.be.instanceOf(JobSpecError);
          expect((err as JobSpecError).problems.join("\n")).to.include(`outputs.layout: subject "${subject}"`).and.include("letters and digits only");
        }
      }
      expect(kwykSpec({ subject: "sub-01_run2" }).outputs.layout, "fine with layout subject").to.equal("subject");
      expect(() => kwykSpec({ outputs: { layout: "derivatives" as "bids" } })).to.throw(JobSpecError, /outputs\.layout/);
    });

    it("the BIDS description: derivative, GeneratedBy cloudcompute with its version and the image pinned to its digest", () => {
      const digest = `sha256:${"ab".repeat(32)}`;
      const text = JSON.stringify(datasetDescription({ runtime: "docker", reference: "neuronets/kwyk:latest-cpu", digest }, "0.1.0+abc"));
      const description = JSON.parse(text);
      expect(description).to.deep.include({ BIDSVersion: BIDS_VERSION, DatasetType: "derivative", Name: "cloudcompute: neuronets/kwyk:latest-cpu" });
      expect(description.GeneratedBy).to.have.length(1);
      expect(description.GeneratedBy[0]).to.deep.include({ Name: "cloudcompute", Version: "0.1.0+abc", Container: { Type: "docker", Tag: `neuronets/kwyk:latest-cpu@${digest}` } });
      expect(description.GeneratedBy[0].Description).to.include(digest);
      expect(pinnedReference({ reference: "img@sha256:00", digest })).to.equal("img@sha256:00");
      const sif = datasetDescription({ runtime: "apptainer", reference: "/images/kwyk.sif", digest: "sif-sha256:0f" }, "dev");
      expect(sif.GeneratedBy[0].Container).to.deep.equal({ Type: "apptainer", Tag: "/images/kwyk.sif" });
      expect(datasetDescription({ runtime: "none", reference: "none" }, "dev").GeneratedBy[0].Container).to.equal(undefined);
    });
  });
});
