// Schedules (admin): next run, last run and outcome; trigger now, pause, resume.
import { api } from "/console/api.js";
import { action, badge, clear, h, table, time, toast } from "/console/ui.js";

export async function render(root, ctx) {
  root.append(h("h1", {}, "Schedules"));
  if (!ctx.isAdmin) { root.append(h("p", { class: "muted" }, "Schedules need an admin key.")); return; }
  const body = h("div");
  root.append(body);
  async function load() {
    const { schedules } = await api("GET", "/v1/schedules");
    clear(body, table("Schedules", [
      ["Name", (s) => s.name],
      ["Cron", (s) => h("code", {}, `${s.cron} (${s.timezone})`)],
      ["Action", (s) => s.action],
      ["State", (s) => (!s.enabled ? badge("disabled", "neutral") : s.paused ? badge("paused", "warn") : badge("active", "ok"))],
      ["Next run", (s) => time(s.next_run)],
      ["Last run", (s) => (s.last_run ? time(s.last_run.fired_at) : "never")],
      ["Outcome", (s) => (s.last_run ? h("span", {}, badge(s.last_run.outcome), s.last_run.manual ? " (manual)" : "", s.last_run.detail ? ` ${s.last_run.detail}` : "") : "—")],
      ["", (s) => h("span", { class: "row-actions" },
        action("Trigger", () => api("POST", `/v1/schedules/${s.name}/trigger`), { after: () => { toast(`Triggered ${s.name}`); return load(); } }),
        s.paused
          ? action("Resume", () => api("POST", `/v1/schedules/${s.name}/resume`), { after: load })
          : action("Pause", () => api("POST", `/v1/schedules/${s.name}/pause`), { after: load, cls: "danger" }))],
    ], schedules, "No schedules."));
  }
  await load();
  ctx.every(5000, () => { if (!document.querySelector("dialog[open]")) load().catch(() => {}); });
}
