/**
 * The jobstatus browser client: generated messages and services (under
 * `../gen`, from `proto/` by `npm run generate`) plus the reconnecting
 * watchers every frontend needs.
 */
export * from "./backoff.js";
export * from "./transport.js";
export * from "./watch.js";
export * from "../gen/jobstatus/v1/jobstatus_pb.js";
