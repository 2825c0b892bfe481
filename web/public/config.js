// Settings for an application that embeds the job page. This file is
// served as-is beside the page; replace it in your deployment. Left as
// shipped it sets nothing, and the page signs in from a sign-in link
// (`?token=`), the form, or a message from its embedding window.
//
// window.jobstatusConfig = {
//   // The jobstatus server the page talks to (grpc-web).
//   api: "https://jobs.example.com",
//   // The signed-in user's current token. Called at start and again when
//   // the server refuses the token in use; with it the page shows no form.
//   getToken: () => fetch("/session/jobstatus-token").then((r) => r.text()),
//   // Or, with the page in an iframe of this origin, accept
//   // postMessage({ type: "jobstatus:sign-in", token }, pageOrigin).
//   tokenOrigin: "https://app.example.com",
// };
