// Loaded by mocha before any test file (.mocharc.json): quiet the AWS SDK's Node 20 notice in test output.
import { silenceAwsSdkNodeNotice } from "../../job/node-support";

silenceAwsSdkNodeNotice();
