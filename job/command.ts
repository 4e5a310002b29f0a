/**
 * The container command's placeholders — {input} {input.NAME} {inputs} {output} {subject} {jobId} — in one place:
 * which names exist (spec validation refuses the others) and how the agent fills them in.
 */

export const PLACEHOLDERS = ["input", "inputs", "output", "subject", "jobId"] as const;

/** Every `{name}` in an argument. */
const PLACEHOLDER = /\{([^}]*)\}/g;

function isKnownPlaceholder(name: string, inputNames: ReadonlySet<string>): boolean {
  if ((PLACEHOLDERS as readonly string[]).includes(name)) return true;
  const named = /^input\.(.+)$/.exec(name);
  return named !== null && inputNames.has(named[1]);
}

/** The placeholder names in `command` that are neither built in nor {input.NAME} of a known input. */
export function unknownPlaceholders(command: string[], inputNames: ReadonlySet<string>): string[] {
  return command.flatMap((arg) => [...arg.matchAll(PLACEHOLDER)].map((m) => m[1])).filter((name) => !isKnownPlaceholder(name, inputNames));
}

export interface PlaceholderValues {
  /** Selected files per input, in spec order, as the program sees them (container or host paths). */
  inputs: Array<{ name: string; files: string[] }>;
  output: string;
  subject: string;
  jobId: string;
}

/**
 * Fill the placeholders of a command. An argument that is exactly {input}, {input.NAME} or {inputs} becomes one
 * argument per selected file; inside a longer argument they stand for the first selected file.
 */
export function expandCommand(command: string[], values: PlaceholderValues): string[] {
  const filesOf = (name: string): string[] => {
    if (name === "inputs") return values.inputs.flatMap((input) => input.files);
    if (name === "input") return values.inputs[0]?.files ?? [];
    const named = /^input\.(.+)$/.exec(name);
    if (named) {
      const input = values.inputs.find((i) => i.name === named[1]);
      if (input) return input.files;
    }
    throw new Error(`unknown placeholder {${name}}`);
  };
  const scalar = (name: string): string => {
    if (name === "output") return values.output;
    if (name === "subject") return values.subject;
    if (name === "jobId") return values.jobId;
    return filesOf(name)[0] ?? "";
  };
  return command.flatMap((arg) => {
    const whole = /^\{(input|inputs|input\.[^}]+)\}$/.exec(arg);
    if (whole) return filesOf(whole[1]);
    return [arg.replace(PLACEHOLDER, (_, name: string) => scalar(name))];
  });
}
