// The answers page: recent answers from /answers/list, every text put on screen by answer-text.js's `put` (textContent
// only, bidirectional controls made visible, each text isolated): the question and the reasoning are anyone's text.
"use strict";
(function () {
  const describe = window.MedReasonerAnswerText; // answer-text.js, loaded first
  const params = new URLSearchParams(window.location.search);
  const filters = new URLSearchParams({ limit: "50" });
  for (const key of ["image", "study"]) {
    if (params.get(key)) filters.set(key, params.get(key));
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) describe.put(node, text);
    if (className) node.className = className;
    return node;
  }

  function row(list, term, value) {
    if (value === undefined || value === null || value === "") return;
    list.append(el("dt", term), el("dd", value));
  }

  function modelLabel(answer) {
    const version = answer.reasoner_version || {};
    const parts = [answer.reasoner || "?"];
    if (version.version) parts.push("version " + version.version);
    if (version.sha256) parts.push("weights " + String(version.sha256).slice(0, 12));
    return parts.join(", ");
  }

  function card(answer) {
    const article = el("article");
    article.id = "answer-" + answer.answer_id;
    if (answer.picture) {
      const img = el("img");
      img.alt = "The picture the model saw, with the mask, box and points it answered";
      img.src = "/answers/" + encodeURIComponent(answer.answer_id) + "/picture";
      article.append(img);
    }
    const text = el("div", undefined, "text");
    text.append(el("h2", answer.question));
    const refined = describe.refinedBy(answer);
    text.append(el("p", describe.status(answer) + (refined ? " · " + refined : ""), "status-" + answer.status));
    text.append(el("p", answer.reasoning || "(no reasoning given)", "reasoning"));
    const facts = el("dl");
    row(facts, "Image", answer.image_id || "uploaded file");
    row(facts, "Where", describe.slice(answer) || "2D picture");
    if (answer.propagation) {
      const p = answer.propagation;
      row(facts, "Carried", describe.carriedThrough(answer) + ", stopped: " +
        JSON.stringify(p.stopped) + ", " + p.seconds_per_slice + " s per slice");
    }
    row(facts, "Window", answer.window);
    row(facts, "Box", answer.box ? JSON.stringify(answer.box) : "none");
    row(facts, "Points", answer.points ? JSON.stringify(answer.points) : "none");
    row(facts, "Confidence", answer.confidence === undefined ? undefined : Math.round(100 * answer.confidence) + "%");
    row(facts, "Model", modelLabel(answer));
    row(facts, "Latency", answer.latency_s === undefined ? undefined : answer.latency_s + " s");
    row(facts, "Answered", answer.answered_at);
    row(facts, "Answer id", answer.answer_id);
    text.append(facts);
    if (answer.notice) text.append(el("p", answer.notice, "notice"));
    const raw = el("details");
    raw.append(el("summary", "Raw answer"), el("p", answer.raw_text, "raw"));
    text.append(raw);
    article.append(text);
    return article;
  }

  async function load() {
    const status = document.getElementById("status");
    if (!describe) {
      status.textContent = "Could not load the answers: answer-text.js did not load.";
      return;
    }
    status.textContent = "Loading...";
    try {
      const response = await fetch("/answers/list?" + filters.toString(), { credentials: "same-origin" });
      if (!response.ok) throw new Error("the server answered " + response.status);
      const answers = (await response.json()).answers;
      const list = document.getElementById("answers");
      list.replaceChildren(...answers.map(card));
      status.textContent = answers.length ? answers.length + " answers" : "No answers yet.";
    } catch (error) {
      status.textContent = "Could not load the answers: " + error.message;
    }
  }

  // The images this server serves, with the ids to ask about (a PACS series: its SeriesInstanceUID): the page's index,
  // shown when no image or study is chosen. The listing is the caller's view of the datastore (no other clinician's
  // text); each id links to the answers about it.
  async function loadImages() {
    const section = document.getElementById("images");
    if (!describe || filters.get("image") || filters.get("study")) return;
    try {
      const response = await fetch("/datastore/?output=all", { credentials: "same-origin" });
      if (!response.ok) throw new Error("the server answered " + response.status);
      const objects = (await response.json()).objects || {};
      const rows = Object.keys(objects).sort().map(function (id) {
        const entry = objects[id] || {};
        const info = (entry.image || {}).info || {};
        const tr = el("tr");
        const idCell = el("td");
        const link = el("a", id, "image-id");
        link.href = "/answers/?image=" + encodeURIComponent(id);
        idCell.append(link);
        const what = [info.Modality, info.SeriesDescription].filter(Boolean).join(", ");
        const count = info.NumberOfSeriesRelatedInstances;
        tr.append(idCell, el("td", what || "-"), el("td", count ? String(count) : "-"),
          el("td", (entry.labels || {}).final ? "saved" : "-"));
        return tr;
      });
      const table = el("table");
      const head = el("tr");
      for (const title of ["Image id", "What", "Images", "Final label"]) head.append(el("th", title));
      table.append(head, ...rows);
      section.replaceChildren(el("h2", "Images on this server (" + rows.length + ")"), table);
    } catch (error) {
      section.replaceChildren(el("p", "Could not list the images: " + error.message));
    }
  }

  const scope = document.getElementById("scope"); // from the link that opened the page: anyone's text too
  if (describe && filters.get("image")) describe.put(scope, "Answers about image " + filters.get("image"));
  if (describe && filters.get("study")) describe.put(scope, "Answers about study " + filters.get("study"));
  document.getElementById("refresh").addEventListener("click", function () { load(); loadImages(); });
  load();
  loadImages();
})();
