/** Exit codes of every driver command, and the errors that carry them to the CLI's top level. */

export const ExitCode = {
  /** The job (or every job of a batch) succeeded. */
  ok: 0,
  /** The job ran and failed (its marker says so, or it died without one). */
  jobFailed: 1,
  /** Bad input: nothing was created. */
  badInput: 2,
  /** The engine, the backend or the cloud failed us (stack could not be created, destroyed, locked, ...). */
  infra: 3,
  /** Interrupted by SIGINT/SIGTERM; whatever the job had created was destroyed. */
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export class DriverError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Refused before anything exists. */
export class BadInputError extends DriverError {
  constructor(message: string) {
    super(message, ExitCode.badInput);
  }
}

export class InfraError extends DriverError {
  constructor(message: string) {
    super(message, ExitCode.infra);
  }
}

export class InterruptedError extends DriverError {
  constructor(message = "interrupted") {
    super(message, ExitCode.interrupted);
  }
}
