"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  const res = await fetch("/api/admin/stats", { credentials: "same-origin" });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { document.getElementById("error").textContent = data.detail || res.statusText; return; }
  const a = data.agreement === null ? "n/a" : `${(100 * data.agreement).toFixed(1)}%`;
  document.getElementById("agreement").textContent =
    `agreement ${a} over ${data.agreement_pairs} pairs on ${data.questions_with_duplicates} duplicated questions; ` +
    (data.evaluation_agreement_pairs
      ? `evaluation pairs: agreement ${(100 * data.evaluation_agreement).toFixed(1)}% over ${data.evaluation_agreement_pairs} pairs; `
      : "") +
    `${data.flagged.length} flagged questions`;
  const body = document.getElementById("rows");
  for (const [name, s] of Object.entries(data.labelers)) {
    const tr = document.createElement("tr");
    for (const v of [name, s.answers, s.answers_per_hour === null ? "" : s.answers_per_hour.toFixed(0), s.skips, s.flags]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
    }
    body.appendChild(tr);
  }
});
