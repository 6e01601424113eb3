// MedReasoner's answer panel for the OHIF viewer that MONAI Label serves at /ohif/. The server appends a loader for
// this file to OHIF's app-config.js (lib/server/routes/viewer.py; --conf ohif_answer_panel false turns it off).
// It shows the newest answer about the open study (from /answers/list), refreshed every few seconds, so the question,
// the reasoning and the slice the mask is on appear after Run without a reload. Every text is put on screen by
// answer-text.js's `put` (textContent only, never markup; bidirectional controls made visible; each text isolated):
// the question and the reasoning are anyone's text.
"use strict";
(function () {
  if (window.medreasonerAnswerPanel) return;
  window.medreasonerAnswerPanel = true;
  const describe = window.MedReasonerAnswerText; // answer-text.js, loaded first (lib/server/routes/viewer.py)
  if (!describe) {
    console.error("MedReasoner answer panel: answer-text.js did not load; no panel");
    return;
  }
  const POLL_MS = 2000;
  const GIVE_UP_MS = 60000;
  let shownId = null;

  function openStudy() {
    const params = new URLSearchParams(window.location.search);
    const value = params.get("StudyInstanceUIDs") || params.get("studyInstanceUIDs") || "";
    return value.split(",")[0] || null;
  }

  function el(tag, text, style) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) describe.put(node, text);
    if (style) node.style.cssText = style;
    return node;
  }

  // Lower left, over the study list and no wider than it: the MONAI Label panel on the right holds the controls a
  // user clicks next (Point Prompts' segments, Run), and the viewports hold the image; neither may be covered.
  function panel() {
    let box = document.getElementById("medreasoner-answer");
    if (box) return box;
    box = el(
      "section",
      undefined,
      "position:fixed;left:8px;bottom:8px;z-index:10000;width:250px;max-height:50vh;overflow:auto;" +
        "background:rgba(9,12,41,.95);color:#e6ecf5;border:1px solid #5acce6;border-radius:6px;padding:10px 12px;" +
        "font:13px/1.4 system-ui,sans-serif;box-shadow:0 2px 10px rgba(0,0,0,.5);" +
        "overflow-wrap:anywhere" // a question with no spaces wraps inside the panel (inherited by every text)
    );
    box.id = "medreasoner-answer";
    box.setAttribute("aria-label", "MedReasoner answer");
    document.body.append(box);
    return box;
  }

  function sliceText(answer) {
    const slice = describe.slice(answer);
    if (slice === null) return "On the picture (2D).";
    const where = "Mask on " + slice;
    const carried = describe.carriedThrough(answer);
    if (carried) return where + ", carried through " + carried + ".";
    // This OHIF's axial "I:" label names the mirrored instance on head-first series (README, What we found about OHIF).
    return where + "; scroll there if the view opened on another (the line in the other two views shows its level; " +
      "OHIF's I: label may name another instance).";
  }

  // "Q: " and the question as its own isolated text: an Arabic or Hebrew question reads right to left after it.
  function question(answer) {
    const line = el("div", undefined, "margin-top:6px;font-weight:600");
    line.append("Q: ", el("bdi", answer.question));
    return line;
  }

  function show(answer) {
    const box = panel();
    const header = el("div", undefined, "display:flex;justify-content:space-between;align-items:center");
    header.append(el("strong", "MedReasoner answer", "color:#5acce6"));
    const hide = el("button", "Hide", "background:none;border:1px solid #5acce6;color:#5acce6;border-radius:3px;cursor:pointer");
    hide.type = "button";
    hide.addEventListener("click", () => { box.style.display = "none"; });
    header.append(hide);
    const grounded = answer.status === "ok";
    const confidence = answer.confidence === undefined ? "" : " · " + Math.round(100 * answer.confidence) + "% consistent";
    const refined = describe.refinedBy(answer);
    const version = (answer.reasoner_version || {}).version;
    const link = el("a", "All answers for this study", "color:#5acce6");
    link.href = "/answers/?study=" + encodeURIComponent(answer.study_uid || "");
    link.target = "_blank";
    link.rel = "noopener";
    box.replaceChildren(
      header,
      question(answer),
      el("div", describe.status(answer) + confidence + (refined ? " · " + refined : ""), "margin-top:4px;color:" + (grounded ? "#7ee07e" : "#ff8a8a")),
      el("div", answer.reasoning || "(no reasoning given)", "margin-top:6px;white-space:pre-wrap"),
      el("div", sliceText(answer), "margin-top:6px;color:#c8d3e6"),
      el("div", "Model: " + (answer.reasoner || "?") + (version ? " (" + version + ")" : "") + " · " + (answer.answered_at || ""),
        "margin-top:6px;font-size:11px;color:#9fb0c8"),
      link
    );
    box.dataset.answerId = answer.answer_id;
    box.style.display = "block";
  }

  async function poll() {
    const study = openStudy();
    let delay = POLL_MS;
    let answer = null;
    if (study && document.visibilityState !== "hidden") {
      try {
        const response = await fetch("/answers/list?limit=1&study=" + encodeURIComponent(study), { credentials: "same-origin" });
        if (!response.ok) delay = GIVE_UP_MS; // signed out, or no answer log on this server: ask again much later
        if (response.ok) answer = (await response.json()).answers[0];
      } catch (error) {
        // the server may be restarting; the next poll tries again
      }
    }
    window.setTimeout(poll, delay);
    if (answer && answer.answer_id !== shownId) {
      show(answer); // a drawing error shows in the console, and the next poll draws the answer again
      shownId = answer.answer_id;
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", poll);
  else poll();
})();
