// Webhooks: endpoints with their health, deliveries with attempts, retry, replay since, rotate secret, test.
import { api, query } from "/console/api.js";
import { action, badge, clear, field, h, Pager, pre, showDialog, table, time, toast } from "/console/ui.js";

function health(e) {
  if (e.disabled) return h("span", {}, badge("disabled", "bad"), " ", e.disabled_reason || "");
  if (e.failing_since) return h("span", {}, badge("failing", "warn"), " since ", time(e.failing_since));
  return badge("healthy", "ok");
}

function attempts(delivery) {
  return table("Attempts", [
    ["#", (a) => a.n],
    ["At", (a) => time(a.at)],
    ["Status", (a) => a.status ?? "—"],
    ["Latency", (a) => `${Math.round(a.latency_ms)} ms`],
    ["Error", (a) => a.error || ""],
  ], delivery.attempts || [], "No attempts yet.");
}

async function endpoint(root, ctx, id) {
  const e = await api("GET", `/v1/webhooks/${encodeURIComponent(id)}`);
  root.append(h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")), h("h1", {}, `Webhook ${e.url}`));
  root.append(h("dl", { class: "facts" },
    h("dt", {}, "Health"), h("dd", {}, health(e)),
    h("dt", {}, "Events"), h("dd", {}, e.event_types.join(", ") || "all"),
    h("dt", {}, "Description"), h("dd", {}, e.description || "—"),
    h("dt", {}, "Created"), h("dd", {}, time(e.created_at))));
  const pager = new Pager(
    async (cursor) => {
      const page = await api("GET", `/v1/webhooks/${encodeURIComponent(id)}/deliveries${query({ limit: 20, cursor })}`);
      return { items: page.deliveries, next: page.next_cursor };
    },
    (deliveries) => table("Deliveries", [
      ["Delivery", (d) => h("button", { type: "button", class: "link", onclick: () => showDialog(`Delivery ${d.id}`, pre({ ...d, attempts: undefined }), h("h3", {}, "Attempts"), attempts(d)) }, d.id.slice(0, 16))],
      ["Event", (d) => d.event_type],
      ["State", (d) => badge(d.state)],
      ["Attempts", (d) => d.attempt_count],
      ["Last status", (d) => d.last_status ?? (d.last_error || "—")],
      ["Created", (d) => time(d.created_at)],
      ["", (d) => (ctx.canWrite && d.state !== "pending"
        ? action("Retry", () => api("POST", `/v1/deliveries/${d.id}/retry`), { after: () => { toast(`Retrying ${d.id}`); return pager.reload(); } }) : "")],
    ], deliveries, "No deliveries yet."),
  );
  if (ctx.canWrite) {
    const since = h("input", { type: "datetime-local", name: "since", required: true });
    const replay = h("form", { class: "inline", "aria-label": "Replay events since" }, field("Replay since", since),
      h("button", { type: "submit", dataset: { write: "1" } }, "Replay"));
    replay.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const r = await api("POST", `/v1/webhooks/${encodeURIComponent(id)}/replay`, { since: new Date(since.value).toISOString() });
        toast(`Replaying ${r.matched} events`);
        await pager.reload();
      } catch (err) { toast(`Replay failed: ${err.message}`, "error"); }
    });
    const secret = h("p", { class: "secret", "aria-live": "polite" });
    root.append(h("div", { class: "bulk" },
      action("Send test", () => api("POST", `/v1/webhooks/${encodeURIComponent(id)}/test`), { after: () => { toast("Test event sent"); return pager.reload(); } }),
      action("Rotate secret", () => api("POST", `/v1/webhooks/${encodeURIComponent(id)}/rotate-secret`), {
        confirm: "Rotate the signing secret? The old one keeps signing during the grace period.",
        after: (r) => clear(secret, "New secret (shown once): ", h("code", {}, r.secret)),
      }),
      e.disabled ? action("Enable", () => api("PATCH", `/v1/webhooks/${encodeURIComponent(id)}`, { disabled: false }), { after: () => { location.reload(); } }) : null),
    secret, replay);
  }
  root.append(h("h2", {}, "Deliveries"), pager.root);
  await pager.show();
}

async function list(root, ctx) {
  const { webhooks } = await api("GET", "/v1/webhooks");
  root.append(h("h1", {}, "Webhooks"), table("Webhook endpoints", [
    ["URL", (e) => h("a", { href: `#/webhooks/${e.id}` }, e.url)],
    ["Events", (e) => e.event_types.join(", ") || "all"],
    ["Health", health],
    ["Created", (e) => time(e.created_at)],
  ], webhooks, "No webhook endpoints."));
  if (!ctx.canWrite) return;
  const url = h("input", { type: "url", name: "url", required: true });
  const types = h("input", { name: "event_types", placeholder: "job.succeeded, job.failed" });
  const secret = h("p", { class: "secret", "aria-live": "polite" });
  const form = h("form", { class: "inline", "aria-label": "Add a webhook endpoint" }, field("URL", url), field("Event types", types),
    h("button", { type: "submit", dataset: { write: "1" } }, "Add endpoint"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const eventTypes = types.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const created = await api("POST", "/v1/webhooks", { url: url.value, event_types: eventTypes.length ? eventTypes : ["*"] });
      clear(secret, "Signing secret (shown once): ", h("code", {}, created.secret));
    } catch (err) { toast(`Add failed: ${err.message}`, "error"); }
  });
  root.append(h("h2", {}, "Add an endpoint"), form, secret);
}

export async function render(root, ctx) {
  const [id] = ctx.args;
  if (id) await endpoint(root, ctx, id);
  else await list(root, ctx);
}
