/**
 * `ProfilePropagation`: a pause between creating an instance profile and launching an instance with it.
 *
 * IAM is eventually consistent: RunInstances may refuse a profile created seconds earlier ("Invalid IAM Instance
 * Profile name"). The AWS provider retries that error for a while but still fails sometimes
 * (terraform-provider-aws#27516), so the instance takes its profile name from this resource, which waits once, on
 * create only; later updates of the stack do not wait again.
 */
import * as pulumi from "@pulumi/pulumi";

interface PropagationState {
  profileName: string;
  seconds: number;
}

const propagationProvider: pulumi.dynamic.ResourceProvider<PropagationState, PropagationState> = {
  async create(inputs) {
    await new Promise((resolve) => setTimeout(resolve, inputs.seconds * 1000));
    return { id: inputs.profileName, outs: inputs };
  },
  async diff(_id, olds, news) {
    const replaces = olds.profileName !== news.profileName ? ["profileName"] : [];
    return { changes: replaces.length > 0 || olds.seconds !== news.seconds, replaces };
  },
  async update(_id, _olds, news) {
    return { outs: news };
  },
};

export class ProfilePropagation extends pulumi.dynamic.Resource {
  /** The profile's name, available only after the wait. */
  declare readonly profileName: pulumi.Output<string>;

  constructor(name: string, args: { profileName: pulumi.Input<string>; seconds: number }, opts?: pulumi.CustomResourceOptions) {
    super(propagationProvider, name, args, opts);
  }
}
