// Keys (admin): create (the key is shown once), list, revoke; a tenant's rate limits.
import { api, query } from "/console/api.js";
import { action, clear, field, h, pre, select, table, time, toast } from "/console/ui.js";

export async function render(root, ctx) {
  root.append(h("h1", {}, "API keys"));
  if (!ctx.isAdmin) { root.append(h("p", { class: "muted" }, "Keys need an admin key.")); return; }
  const tenantFilter = h("input", { name: "tenant" });
  const list = h("div");
  const shown = h("div", { class: "secret", "aria-live": "polite" });
  async function load() {
    const { keys } = await api("GET", `/v1/keys${query({ tenant: tenantFilter.value.trim() })}`);
    clear(list, table("API keys", [
      ["Id", (k) => h("code", {}, k.id)],
      ["Tenant", (k) => k.tenant],
      ["Role", (k) => k.role],
      ["Name", (k) => k.name || "—"],
      ["Created", (k) => time(k.created_at)],
      ["", (k) => (k.id === ctx.me.key_id ? "this key" : action("Revoke", () => api("DELETE", `/v1/keys/${k.id}`), {
        confirm: `Revoke key ${k.id} (${k.tenant}, ${k.role})? It stops working at once.`, after: load, cls: "danger",
      }))],
    ], keys, "No keys."));
  }
  const tenant = h("input", { name: "tenant", required: true, value: ctx.me.tenant });
  const role = select("role", [["reader", "reader"], ["writer", "writer"], ["admin", "admin"]], "writer");
  const name = h("input", { name: "name" });
  const create = h("form", { class: "inline", "aria-label": "Create a key" }, field("Tenant", tenant), field("Role", role), field("Name", name),
    h("button", { type: "submit", dataset: { write: "1" } }, "Create key"));
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api("POST", "/v1/keys", { tenant: tenant.value.trim(), role: role.value, name: name.value.trim() || undefined });
      clear(shown, h("p", {}, "New key (shown this once; copy it now): "), h("code", { id: "new-key" }, made.key));
      await load();
    } catch (err) { toast(`Create failed: ${err.message}`, "error"); }
  });
  const filterForm = h("form", { class: "inline", "aria-label": "Filter keys" }, field("Tenant", tenantFilter), h("button", { type: "submit" }, "Filter"));
  filterForm.addEventListener("submit", (event) => { event.preventDefault(); load(); });

  const limitsTenant = h("input", { name: "limits_tenant", required: true, value: ctx.me.tenant });
  const limits = h("div");
  const limitsForm = h("form", { class: "inline", "aria-label": "Show rate limits" }, field("Tenant", limitsTenant), h("button", { type: "submit" }, "Show limits"));
  limitsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const tenantName = limitsTenant.value.trim();
      const path = `/v1/tenants/${encodeURIComponent(tenantName)}/rate-limits`;
      const show = (r) => {
        const own = h("textarea", { name: "overrides", rows: 6 }, JSON.stringify(r.overrides, null, 2));
        const edit = h("form", { class: "stack", "aria-label": `Set the rate limits of ${tenantName}` },
          field("Own quotas (JSON; null returns a field to the default, 0 means no limit)", own),
          h("button", { type: "submit", dataset: { write: "1" } }, "Save quotas"));
        edit.addEventListener("submit", async (e) => {
          e.preventDefault();
          try {
            show(await api("PUT", path, JSON.parse(own.value)));
            toast(`Rate limits of ${tenantName} saved`);
          } catch (err) { toast(`Saving failed: ${err.message}`, "error"); }
        });
        clear(limits, h("p", {}, `Rate limiting ${r.enabled ? "on" : "off"}. In force:`), pre(r.effective), edit);
      };
      show(await api("GET", path));
    } catch (err) { toast(`Limits failed: ${err.message}`, "error"); }
  });

  root.append(h("h2", {}, "Create a key"), create, shown, h("h2", {}, "Keys"), filterForm, list, h("h2", {}, "Rate limits"), limitsForm, limits);
  await load();
}
