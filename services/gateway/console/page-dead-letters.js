// Dead letters: list (by queue or collection), inspect error and arguments, replay one or all matching, delete.
import { api, query } from "/console/api.js";
import { action, badge, field, h, Pager, pre, showDialog, table, time, toast } from "/console/ui.js";

export async function render(root, ctx) {
  const queue = h("input", { name: "queue" });
  const collection = h("input", { name: "collection" });
  const filters = h("form", { class: "inline", "aria-label": "Filter dead letters" },
    field("Queue", queue), field("Collection", collection), h("button", { type: "submit" }, "Filter"));
  const filter = () => ({ queue: queue.value.trim() || undefined, collection: collection.value.trim() || undefined });
  filters.addEventListener("submit", (event) => { event.preventDefault(); pager.stack = []; pager.show(); });
  root.append(h("h1", {}, "Dead letters"), filters);

  if (ctx.canWrite) {
    root.append(h("div", { class: "bulk" }, action("Replay all matching", async () => {
      const result = await api("POST", "/v1/dead-letters:replay", filter());
      toast(`Replayed ${result.matched} dead letters`);
    }, {
      confirm: () => {
        const f = filter();
        if (!f.queue && !f.collection) { toast("Choose a queue or a collection first.", "error"); return null; }
        return `Replay every dead letter matching ${JSON.stringify(f)}?`;
      },
      after: () => pager.reload(),
    })));
  }

  const inspect = async (id) => {
    const letter = await api("GET", `/v1/dead-letters/${encodeURIComponent(id)}`);
    showDialog(`Dead letter ${letter.id}`,
      h("dl", { class: "facts" },
        h("dt", {}, "Queue"), h("dd", {}, letter.queue),
        h("dt", {}, "Operation"), h("dd", {}, letter.op),
        h("dt", {}, "Job"), h("dd", {}, letter.job_id || "—"),
        h("dt", {}, "Attempts"), h("dd", {}, letter.attempts),
        h("dt", {}, "Failed"), h("dd", {}, time(letter.failed_at))),
      h("h3", {}, "Error"), h("pre", { class: "error-text" }, letter.error),
      h("h3", {}, "Arguments"), pre(letter.arguments));
  };

  const pager = new Pager(
    async (cursor) => {
      const page = await api("GET", `/v1/dead-letters${query({ ...filter(), limit: 25, cursor })}`);
      return { items: page.dead_letters, next: page.next_cursor };
    },
    (letters, next) => table("Dead letters", [
      ["Letter", (d) => h("button", { type: "button", class: "link", onclick: () => inspect(d.id).catch((e) => toast(e.message, "error")) }, d.id.slice(0, 16))],
      ["Queue", (d) => badge(d.queue, "neutral")],
      ["Operation", (d) => d.op],
      ["Collection", (d) => d.collection || "—"],
      ["Error", (d) => h("span", { class: "clip", title: d.error }, d.error)],
      ["Attempts", (d) => d.attempts],
      ["Failed", (d) => time(d.failed_at)],
      ["", (d) => (ctx.canWrite ? h("span", { class: "row-actions" },
        action("Replay", () => api("POST", `/v1/dead-letters/${d.id}/replay`), { after: () => { toast(`Replayed ${d.id}`); return pager.reload(); } }),
        action("Delete", () => api("DELETE", `/v1/dead-letters/${d.id}`), { confirm: `Delete dead letter ${d.id}? Its work is discarded.`, after: () => pager.reload(), cls: "danger" }),
      ) : "")],
    ], letters, next ? "No match among the letters read so far: Next reads older ones." : "No dead letters."),
  );
  root.append(pager.root);
  await pager.show();
}
