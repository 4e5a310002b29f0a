/**
 * Subject identifiers.
 *
 * NDA GUIDs appear in two spellings: `NDAR_INVXXXXXXXX` (the `subjectkey` column of NDA data structures) and
 * `NDARINVXXXXXXXX` (file names inside ABCD archives). We normalise to the file-name form, which is also safe in
 * S3 keys and Pulumi stack names. Anything else (BIDS `sub-01`, HCP `100307`) is kept as given if it is a safe name.
 */

const NDA_PSEUDO_GUID = /^NDAR_?INV([A-Z0-9]{8})$/i;
const NDA_GUID = /^NDAR([A-Z0-9]{8})$/i;
const GENERIC_SUBJECT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface Subject {
  /** Canonical form used in S3 keys, stack names and placeholders: `NDARINVXXXXXXXX`, `sub-01`, ... */
  id: string;
  /** The NDA `subjectkey` spelling (`NDAR_INVXXXXXXXX`), when the subject is an NDA GUID. */
  ndaSubjectKey?: string;
}

export function parseSubject(raw: string): Subject {
  const value = raw.trim();
  const pseudo = NDA_PSEUDO_GUID.exec(value);
  if (pseudo) {
    const suffix = pseudo[1].toUpperCase();
    return { id: `NDARINV${suffix}`, ndaSubjectKey: `NDAR_INV${suffix}` };
  }
  if (/^NDAR/i.test(value)) {
    const guid = NDA_GUID.exec(value);
    if (guid) return { id: `NDAR${guid[1].toUpperCase()}`, ndaSubjectKey: `NDAR${guid[1].toUpperCase()}` };
    throw new Error(
      `subject "${raw}" looks like an NDA GUID but is malformed: expected NDARINV + 8 letters/digits ` +
        `(NDARINVXXXXXXXX or NDAR_INVXXXXXXXX) or NDAR + 8 letters/digits`,
    );
  }
  if (!GENERIC_SUBJECT.test(value)) {
    throw new Error(
      `subject "${raw}" is not a valid subject id: use an NDA GUID (NDARINVXXXXXXXX) or 1-64 letters, digits, ` +
        `'.', '_' or '-' starting with a letter or digit (e.g. sub-01)`,
    );
  }
  return { id: value };
}

/** Normalised subject id, or a thrown Error naming what is wrong. */
export function normaliseSubject(raw: string): string {
  return parseSubject(raw).id;
}

/**
 * The BIDS subject for a subject id: `sub-01` stays, an NDA GUID becomes `sub-NDARINV…` (the label is letters and
 * digits only). The one definition: input templates (`{bids_subject}`) and the bids output layout use it.
 */
export function bidsSubject(subject: string): string {
  return subject.startsWith("sub-") ? subject : `sub-${subject.replace(/[^A-Za-z0-9]/g, "")}`;
}
