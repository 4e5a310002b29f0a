/**
 * The pinned AWS SDK (3.1169) supports Node 20 but warns on every process that later releases will need Node 22.
 * Our CLIs run on Node 20 by design (the pinned Pulumi SDK), so the notice is noise in users' terminals and logs.
 */
export function silenceAwsSdkNodeNotice(): void {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
}
