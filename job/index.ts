export * from "./spec";
export * from "./command";
export * from "./subject";
export * from "./s3url";
export * from "./layout";
export * from "./records";
export * from "./platform";
