/**
 * What the job page says, as data: for a job, as seen by its client, its
 * worker or anyone else, the badge, the status text, the details and the
 * one action that person can take now. Pure (no DOM, no clock), so every
 * combination of role, state and payment method is unit tested.
 *
 * Must never say "completed" (or "paid") before the job's status is
 * COMPLETED: the texts follow the job's actual state, not its flags.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";

import {
  EventType,
  JobStatus,
  PaymentMethod,
  type Job,
  type JobEvent,
} from "../gen/jobstatus/v1/jobstatus_pb.js";

export type Role = "client" | "worker" | "viewer";

export type Tone = "neutral" | "info" | "attention" | "success" | "danger";

/** The one thing the viewer can do next, if anything. */
export type Action =
  /** The worker: "Mark as Complete". */
  | { kind: "mark-complete" }
  /** The client: pick GCASH or CASH and Approve & Pay, or Request changes. */
  | { kind: "review" }
  /** The client, on CASH: send a reference for the payment. */
  | { kind: "submit-proof" }
  /** The worker, on CASH once the proof is in: confirm the money arrived. */
  | { kind: "confirm-cash"; proof: string };

export interface JobView {
  badge: { text: string; tone: Tone };
  /** The sentence that says where the job stands for this viewer. */
  headline: string;
  /** Further facts: who asked for what, when, with which proof. */
  details: string[];
  action?: Action;
}

/** The job's state in words, the same for everyone (the list uses it). */
export const STATE_WORDS: Record<JobStatus, string> = {
  [JobStatus.UNSPECIFIED]: "Unknown",
  [JobStatus.OPEN]: "Open",
  [JobStatus.IN_PROGRESS]: "In progress",
  [JobStatus.AWAITING_CLIENT_APPROVAL]: "Waiting for approval",
  [JobStatus.AWAITING_PAYMENT]: "Awaiting payment",
  [JobStatus.COMPLETED]: "Completed",
  [JobStatus.CANCELLED]: "Cancelled",
};

const STATE_TONE: Record<JobStatus, Tone> = {
  [JobStatus.UNSPECIFIED]: "neutral",
  [JobStatus.OPEN]: "neutral",
  [JobStatus.IN_PROGRESS]: "info",
  [JobStatus.AWAITING_CLIENT_APPROVAL]: "attention",
  [JobStatus.AWAITING_PAYMENT]: "attention",
  [JobStatus.COMPLETED]: "success",
  [JobStatus.CANCELLED]: "danger",
};

export function roleOf(job: Job, me: string): Role {
  if (me && job.clientId === me) return "client";
  if (me && job.workerId === me) return "worker";
  return "viewer";
}

export function methodName(method: PaymentMethod): string {
  switch (method) {
    case PaymentMethod.GCASH:
      return "GCash";
    case PaymentMethod.CASH:
      return "cash";
    default:
      return "";
  }
}

/** "Nov 30, 14:05" in the viewer's locale and time zone. */
export type FormatTime = (at: Date) => string;

export const defaultFormatTime: FormatTime = (at) =>
  new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }).format(at);

function when(job: Job, format: FormatTime): string {
  return job.updatedAt ? ` on ${format(timestampDate(job.updatedAt))}` : "";
}

/** The page's view of `job` for the user `me`. */
export function viewJob(job: Job, me: string, format: FormatTime = defaultFormatTime): JobView {
  const role = roleOf(job, me);
  const badge = { text: STATE_WORDS[job.status], tone: STATE_TONE[job.status] };
  const worker = job.workerId || "the worker";
  const method = methodName(job.paymentMethod);
  const details: string[] = [];

  switch (job.status) {
    case JobStatus.CANCELLED:
      return {
        badge,
        headline: `This job was cancelled${when(job, format)}.`,
        details: job.cancelReason ? [`Reason: ${job.cancelReason}`] : [],
      };

    case JobStatus.COMPLETED: {
      const paid = method ? `Payment by ${method} confirmed${when(job, format)}.` : "";
      if (role === "worker") {
        return { badge, headline: "Job completed! Client has approved.", details: paid ? [paid] : [] };
      }
      if (role === "client") {
        return { badge, headline: "Job completed. Thank you!", details: paid ? [paid] : [] };
      }
      return { badge, headline: `This job was completed${when(job, format)}.`, details: [] };
    }

    case JobStatus.OPEN:
      return {
        badge,
        headline:
          role === "client" ? "Waiting for a worker to be assigned." : "No worker is assigned yet.",
        details,
      };

    case JobStatus.IN_PROGRESS:
      if (role === "worker") {
        if (job.changeRequestReason) {
          details.push(`The client asked for changes: ${job.changeRequestReason}`);
          details.push("Mark the job complete again once they are done.");
        }
        return { badge, headline: "You are working on this job.", details, action: { kind: "mark-complete" } };
      }
      if (role === "client") {
        if (job.changeRequestReason) details.push(`You asked for changes: ${job.changeRequestReason}`);
        return { badge, headline: `${worker} is working on this job.`, details };
      }
      return { badge, headline: `${worker} is working on this job.`, details };

    case JobStatus.AWAITING_CLIENT_APPROVAL:
      if (role === "worker") {
        return { badge, headline: "Waiting for client to approve completion", details };
      }
      if (role === "client") {
        return {
          badge,
          headline: "Worker has marked this job as complete. Please review and approve!",
          details: [`${worker} marked it complete${when(job, format)}.`],
          action: { kind: "review" },
        };
      }
      return { badge, headline: "The worker marked this job complete; the client is reviewing it.", details };

    case JobStatus.AWAITING_PAYMENT: {
      const cash = job.paymentMethod === PaymentMethod.CASH;
      const proof = job.paymentProofRef;
      if (role === "worker") {
        if (!cash) {
          return {
            badge,
            headline: "Client has approved your work.",
            details: ["They are paying with GCash. You will be told here as soon as the payment arrives."],
          };
        }
        if (!proof) {
          return {
            badge,
            headline: "Client has approved your work.",
            details: ["They will pay you in cash and send a proof of payment, which will show here."],
          };
        }
        return {
          badge,
          headline: "The client sent a proof of their cash payment.",
          details: [`Proof of payment: ${proof}`, "Confirm once you have received the money."],
          action: { kind: "confirm-cash", proof },
        };
      }
      if (role === "client") {
        if (!cash) {
          return {
            badge,
            headline: "You have approved this job completion.",
            details: ["Waiting for GCash to confirm your payment."],
          };
        }
        if (!proof) {
          return {
            badge,
            headline: "You have approved this job completion.",
            details: [`Pay ${worker} in cash, then send a reference for the payment (a receipt number or a photo link).`],
            action: { kind: "submit-proof" },
          };
        }
        return {
          badge,
          headline: "Proof of payment sent.",
          details: [`Your reference: ${proof}`, `Waiting for ${worker} to confirm they received the cash.`],
        };
      }
      return {
        badge,
        headline: `The client approved the work; waiting for payment${method ? ` by ${method}` : ""}.`,
        details,
      };
    }

    default:
      return { badge, headline: "This job is in a state this page does not know.", details };
  }
}

/** One change in words, from the viewer's point of view ("you" for their own). */
export function describeEvent(event: JobEvent, me: string): string {
  const who = event.actorId === me ? "you" : event.actorId || "someone";
  switch (event.event) {
    case EventType.JOB_CREATED:
      return "the job was created";
    case EventType.WORKER_ASSIGNED:
      return `${event.job?.workerId || "a worker"} was assigned`;
    case EventType.WORKER_MARKED_COMPLETE:
      return `${who} marked the job complete`;
    case EventType.CLIENT_REQUESTED_CHANGES:
      return `${who} asked for changes`;
    case EventType.CLIENT_APPROVED_COMPLETION: {
      const method = methodName(event.paymentMethod);
      return `${who} approved completion${method ? ` (paying by ${method})` : ""}`;
    }
    case EventType.PAYMENT_PROOF_SUBMITTED:
      return `${who} sent a proof of payment`;
    case EventType.PAYMENT_CONFIRMED:
      return "the payment was confirmed";
    case EventType.JOB_CANCELLED:
      return "the job was cancelled";
    default:
      return "the job changed";
  }
}
