import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { JobService } from "../gen/jobstatus/v1/jobstatus_pb.js";

export type JobServiceClient = Client<typeof JobService>;

/**
 * The grpc-web transport for a jobstatus server at `baseUrl` (for example
 * `https://jobs.example.com` or `http://localhost:50051`). Binary grpc-web;
 * the server also speaks native gRPC on the same port.
 */
export function createJobStatusTransport(baseUrl: string): Transport {
  return createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
}

/** A typed JobService client over `transport`. */
export function createJobServiceClient(transport: Transport): JobServiceClient {
  return createClient(JobService, transport);
}

/** A token, or a function that returns the current one (for refresh). */
export type TokenSource = string | (() => string | Promise<string>);

export async function resolveToken(token: TokenSource): Promise<string> {
  return typeof token === "function" ? await token() : token;
}

/** Call options carrying the bearer token. */
export async function authHeaders(token: TokenSource): Promise<Record<string, string>> {
  return { authorization: `Bearer ${await resolveToken(token)}` };
}
