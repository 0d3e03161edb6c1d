// Jobs: filter by state and collection, progress with ETA, cancel or retry one, or all matching a filter.
import { api, query } from "/console/api.js";
import { action, badge, clear, duration, field, h, Pager, select, table, time, toast } from "/console/ui.js";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled", "dead"];
const PRIORITIES = ["critical", "high", "normal", "low", "bulk"];
const POLL_MS = 2000;

function progress(job) {
  const pct = Math.round((job.progress ?? 0) * 100);
  return h("span", { class: "progress" },
    h("progress", { max: 100, value: pct, "aria-label": `Job ${job.id} progress`, dataset: { job: job.id } }),
    h("span", { class: "pct", dataset: { pct: job.id } }, `${pct} %`),
    job.eta_seconds !== null && job.eta_seconds !== undefined && job.state === "running"
      ? h("span", { class: "eta" }, `ETA ${duration(job.eta_seconds)}`) : null);
}

function jobActions(job, ctx, after) {
  if (!ctx.canWrite) return "";
  const out = [];
  if (job.state === "queued" || job.state === "running") {
    out.push(action("Cancel", () => api("POST", `/v1/jobs/${job.id}/cancel`), { after, cls: "danger" }));
  }
  if (["failed", "cancelled", "dead"].includes(job.state)) {
    out.push(action("Retry", () => api("POST", `/v1/jobs/${job.id}/retry`), { after }));
  }
  return h("span", { class: "row-actions" }, out);
}

async function detail(root, ctx, id) {
  root.append(h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), h("h1", {}, `Job ${id}`));
  const body = h("div", { id: "job" });
  root.append(body);
  const show = (job) => {
    clear(body,
      h("dl", { class: "facts" },
        h("dt", {}, "State"), h("dd", {}, badge(job.state)),
        h("dt", {}, "Collection"), h("dd", {}, h("a", { href: `#/collections/${job.collection}` }, job.collection)),
        h("dt", {}, "Kind"), h("dd", {}, job.kind),
        h("dt", {}, "Documents"), h("dd", {}, `${job.documents} (embedded ${job.embedded}, indexed ${job.indexed})`),
        h("dt", {}, "Progress"), h("dd", {}, progress(job)),
        h("dt", {}, "Created"), h("dd", {}, time(job.created_at)),
        h("dt", {}, "Index version"), h("dd", {}, job.index_version || "—"),
        job.error ? [h("dt", {}, "Error"), h("dd", {}, h("pre", { class: "error-text" }, job.error))] : null),
      jobActions(job, ctx, reload));
  };
  async function reload() { show(await api("GET", `/v1/jobs/${encodeURIComponent(id)}`)); }
  let job = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  show(job);
  // Follow the job with the API's long poll: it answers as soon as its state or progress changes.
  (async () => {
    while (ctx.current() && !["succeeded", "failed", "cancelled", "dead"].includes(job.state)) {
      try {
        job = await api("GET", `/v1/jobs/${encodeURIComponent(id)}?wait=10`);
      } catch { await new Promise((r) => setTimeout(r, POLL_MS)); continue; }
      if (ctx.current()) show(job);
    }
  })();
}

async function list(root, ctx) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const state = select("state", [["", "any state"], ...STATES.map((s) => [s, s])], params.get("state") || "");
  const collection = h("input", { name: "collection", value: params.get("collection") || "" });
  const priority = select("priority", [["", "any priority"], ...PRIORITIES.map((p) => [p, p])], params.get("priority") || "");
  const after = h("input", { name: "created_after", type: "datetime-local", value: params.get("created_after") || "" });
  const before = h("input", { name: "created_before", type: "datetime-local", value: params.get("created_before") || "" });
  const filters = h("form", { class: "inline", "aria-label": "Filter jobs" },
    field("State", state), field("Collection", collection), field("Priority", priority),
    field("Created after", after), field("Created before", before), h("button", { type: "submit" }, "Filter"));
  // A datetime-local value is the browser's local time: sent as UTC, as the API reads it.
  const instant = (input) => (input.value ? new Date(input.value).toISOString() : undefined);
  const filter = () => ({
    state: state.value || undefined,
    collection: collection.value.trim() || undefined,
    priority: priority.value || undefined,
    created_after: instant(after),
    created_before: instant(before),
  });
  filters.addEventListener("submit", (event) => { event.preventDefault(); pager.stack = []; pager.show(); });
  root.append(h("h1", {}, "Jobs"), filters);

  if (ctx.canWrite) {
    const bulk = (verb) => action(`${verb} all matching`, async () => {
      const result = await api("POST", `/v1/jobs:${verb.toLowerCase()}`, filter());
      toast(`${verb}: ${result.matched} jobs`);
    }, {
      confirm: async () => {
        const f = filter();
        if (!Object.values(f).some((v) => v !== undefined)) { toast("Choose at least one filter first.", "error"); return null; }
        const { matched } = await api("POST", `/v1/jobs:${verb.toLowerCase()}`, { ...f, dry_run: true });
        return `${verb} ${matched} jobs matching ${JSON.stringify(f)}?`;
      },
      after: () => pager.reload(),
      cls: verb === "Cancel" ? "danger" : "",
    });
    root.append(h("div", { class: "bulk" }, bulk("Cancel"), bulk("Retry")));
  }

  const pager = new Pager(
    async (cursor) => {
      const page = await api("GET", `/v1/jobs${query({ ...filter(), limit: 25, cursor })}`);
      return { items: page.jobs, next: page.next_cursor };
    },
    (jobs, next) => table("Jobs", [
      ["Job", (j) => h("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 16))],
      ["Collection", (j) => j.collection],
      ["State", (j) => badge(j.state)],
      ["Priority", (j) => j.priority],
      ["Docs", (j) => j.documents],
      ["Progress", progress],
      ["Created", (j) => time(j.created_at)],
      ["", (j) => jobActions(j, ctx, () => pager.reload())],
    ], jobs, next ? "No match among the jobs read so far: Next reads older ones." : "No jobs match."),
  );
  root.append(pager.root);
  await pager.show();
  ctx.every(POLL_MS * 2, () => {
    if (document.activeElement && pager.root.contains(document.activeElement)) return; // not under the user's hand
    if (document.querySelector("dialog[open]")) return;
    pager.reload().catch(() => {});
  });
}

export async function render(root, ctx) {
  const [id] = ctx.args;
  if (id && id.startsWith("job_")) await detail(root, ctx, id.split("?")[0]);
  else await list(root, ctx);
}


