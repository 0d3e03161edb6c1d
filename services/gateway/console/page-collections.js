// Collections: list, one collection's versions (rollback), and search with hits' score, metadata and text.
import { api, query } from "/console/api.js";
import { action, badge, bytes, clear, field, h, Pager, pre, table, time, toast } from "/console/ui.js";

const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

async function list(root, ctx) {
  const { collections } = await api("GET", "/v1/collections");
  const columns = [
    ["Name", (c) => h("a", { href: `#/collections/${encodeURIComponent(c.name)}` }, c.name)],
    ["Documents", (c) => c.documents],
    ["Segments", (c) => c.segments],
    ["Version", (c) => c.index_version || "—"],
    ["Created", (c) => time(c.created_at)],
  ];
  root.append(h("h1", {}, "Collections"));
  if (ctx.canWrite) {
    const input = h("input", { name: "name", required: true, pattern: "[a-z0-9][a-z0-9_-]*" });
    const form = h("form", { class: "inline", "aria-label": "Create a collection" }, field("New collection", input),
      h("button", { type: "submit", dataset: { write: "1" } }, "Create"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("PUT", `/v1/collections/${encodeURIComponent(input.value.trim())}`);
        location.hash = `#/collections/${encodeURIComponent(input.value.trim())}`;
      } catch (err) { toast(`Create failed: ${err.message}`, "error"); }
    });
    root.append(form);
  }
  root.append(table("Collections", columns, collections, "No collections yet."));
}

function hitCard(hit) {
  const meta = hit.metadata && Object.keys(hit.metadata).length ? pre(hit.metadata) : null;
  return h("li", { class: "hit" },
    h("div", { class: "hit-head" }, h("strong", {}, hit.id), h("span", { class: "score" }, `score ${hit.score.toFixed(4)}`)),
    hit.text !== undefined && hit.text !== null ? h("p", { class: "hit-text" }, hit.text) : null,
    meta);
}

async function search(name, text, k) {
  const path = `/v1/collections/${encodeURIComponent(name)}/search`;
  return api("POST", path, { query: text, k, include: ["text", "metadata"] });
}

async function detail(root, ctx, name) {
  const info = await api("GET", `/v1/collections/${encodeURIComponent(name)}`);
  root.append(h("p", {}, h("a", { href: "#/collections" }, "← Collections")), h("h1", {}, `Collection ${name}`));
  root.append(h("dl", { class: "facts" },
    h("dt", {}, "Documents"), h("dd", { id: "documents" }, info.documents),
    h("dt", {}, "Segments"), h("dd", {}, info.segments),
    h("dt", {}, "Live version"), h("dd", {}, info.index_version || "—"),
    h("dt", {}, "Created"), h("dd", {}, time(info.created_at))));

  const q = h("input", { type: "search", name: "q", required: true });
  const k = h("input", { type: "number", name: "k", min: 1, max: 100, value: 10 });
  const results = h("div", { id: "hits", "aria-live": "polite" });
  const form = h("form", { class: "inline", role: "search", "aria-label": "Search this collection" },
    field("Query", q), field("Top k", k), h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await search(name, q.value, Number(k.value) || 10);
      clear(results, h("p", { class: "muted" }, `${answer.results.length} hits from version ${answer.index_version || "—"}`),
        h("ol", { class: "hits" }, answer.results.map(hitCard)));
    } catch (err) { clear(results, h("p", { class: "error", role: "alert" }, `Search failed: ${err.message}`)); }
  });
  root.append(h("section", { "aria-labelledby": "h-search" }, h("h2", { id: "h-search" }, "Search"), form, results));

  const versions = new Pager(
    async (cursor) => {
      const page = await api("GET", `/v1/collections/${encodeURIComponent(name)}/versions${query({ limit: 10, cursor })}`);
      return { items: page.versions, next: page.next_cursor };
    },
    (items) => table("Versions", [
      ["Version", (v) => h("code", {}, v.version)],
      ["Published", (v) => time(v.created_at)],
      ["Size", (v) => bytes(v.bytes)],
      ["", (v) => (v.live ? badge("live", "ok") : ctx.isAdmin ? action("Roll back", () =>
        api("POST", `/v1/collections/${encodeURIComponent(name)}/rollback`, { version: v.version }), {
        confirm: `Publish version ${v.version} again as the live version of ${name}?`,
        after: (r) => toast(`Rollback queued as job ${r.job_id}`),
      }) : "")],
    ], items, "No versions yet: nothing was indexed."),
  );
  root.append(h("section", { "aria-labelledby": "h-versions" }, h("h2", { id: "h-versions" }, "Versions"), versions.root));
  await versions.show();

  if (ctx.canWrite) {
    const docs = h("textarea", { name: "documents", rows: 6, placeholder: '[{"id": "a", "text": "…", "metadata": {}}]' });
    const ingest = h("form", { class: "stack", "aria-label": "Add documents" }, field("Documents (JSON array)", docs),
      h("button", { type: "submit", dataset: { write: "1" } }, "Add documents"));
    ingest.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const accepted = await api("POST", `/v1/collections/${encodeURIComponent(name)}/documents`, { documents: JSON.parse(docs.value) });
        location.hash = `#/jobs/${accepted.job_id}`;
      } catch (err) { toast(`Ingest failed: ${err.message}`, "error"); }
    });
    root.append(h("section", { "aria-labelledby": "h-ingest" }, h("h2", { id: "h-ingest" }, "Add documents"), ingest));
  }
}

export async function render(root, ctx) {
  const [name] = ctx.args;
  if (name && NAME.test(name)) await detail(root, ctx, name);
  else await list(root, ctx);
}
