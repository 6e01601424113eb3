// MedReasoner's answer panel for the OHIF viewer that MONAI Label serves at /ohif/. The server appends a loader for
// this file to OHIF's app-config.js (lib/server/routes/viewer.py; --conf ohif_answer_panel false turns it off).
// It shows the newest answer about the open study (from /answers/list), refreshed every few seconds, so the question,
// the reasoning and the slice the mask is on appear after Run without a reload; and, since this OHIF shows only
// "Failed to Run Segmentation", the server's reason when it refused a Run. Every text is put on screen by
// answer-text.js's `put` (textContent only, never markup; bidirectional controls made visible; each text isolated):
// the question and the reasoning are anyone's text.
//
// It also makes the view show the mask where the answer says it is, through OHIF's `window.services` and
// `window.cornerstone` (what cornerstone draws, never OHIF's slice counter):
// - after a Run, the view of the answer's series in its acquisition plane goes to the image the mask is on, and the
//   panel's "Go to the mask" button goes there again;
// - OHIF's "I:" label names the DICOM instance of the image drawn. This OHIF build named imageIds[n] for the n-th
//   image counted from the top of the view, while the volume's images run along the slice normal, so on a series
//   whose normal points to the head (the usual axial CT) it named the mirrored instance (docs/pacs.md, What we found about
//   OHIF). The position counter after it, "(6/12)", is OHIF's own: the n-th image from the top of the view.
//
// And it saves: this OHIF's MONAI Label panel has a save_label client call but no button. "Save label" sends the open
// series' labelmap as Slicer's Submit Label saves a final label and in the OHIF client's own format:
// `PUT /datastore/label?image=<SeriesInstanceUID>&tag=final` with raw uint8 voxels (`label.bin`), read from
// cornerstone's labelmap volume of that series (its voxels x fastest, the slices in the volume's order: the server's),
// the answer's segment (`target`) as 1 and everything else 0. The server checks the label against the series' grid
// and stores the DICOM SEG; the panel says so, or shows the server's refusal.
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
  const JUMP_TRIES = 15; // polls to wait for the answer's series to be on screen before giving up the jump
  const ACQUISITION_PLANE = 1e-3; // |view normal x slice normal| below this: the view cuts the volume's own slices
  let shownKey = null;
  let answerAtStart; // the newest answer when the panel started: its mask is not on screen, so no jump to it
  let jump = null; // {answerId, tries}: an answer whose mask the view should go to once its series is on screen
  let lastJumpedTo = null; // each new answer moves the view once; then the clinician scrolls where they like
  const SAVED_SEGMENT = "target"; // the segment OHIF draws the answer in (the task's one label, value 1)
  let saveStatus = null; // {answerId, ok, text}: the last save's outcome, shown with that answer (a new one: unsaved)

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

  // ---- Where the mask is, as cornerstone draws it ----

  function metadata(module, imageId) {
    return window.cornerstone.metaData.get(module, imageId) || {};
  }

  // OHIF's views of `series` that cut its volume in the acquisition plane (one view image = one DICOM image), each
  // with the volume's images in the volume's order (along the slice normal, as the server's slice index counts).
  function viewsOfSeries(series) {
    const cornerstone = window.cornerstone;
    if (!cornerstone || !cornerstone.getRenderingEngines) return [];
    const views = [];
    for (const engine of cornerstone.getRenderingEngines()) {
      for (const viewport of engine.getViewports()) {
        if (!viewport.getVolumeId || !viewport.getVolumeId()) continue;
        const volume = cornerstone.cache.getVolume(viewport.getVolumeId());
        if (!volume || !volume.imageIds || !volume.imageIds.length || !volume.direction) continue;
        if (metadata("generalSeriesModule", volume.imageIds[0]).seriesInstanceUID !== series) continue;
        const [a, b, c] = viewport.getCamera().viewPlaneNormal;
        const [x, y, z] = Array.from(volume.direction).slice(6, 9);
        const cross = Math.hypot(b * z - c * y, c * x - a * z, a * y - b * x);
        if (cross < ACQUISITION_PLANE) views.push({ viewport, imageIds: volume.imageIds });
      }
    }
    return views;
  }

  // The image the answer's mask is on: the one with its DICOM instance number when exactly one has it, else the one
  // at its slice index (cornerstone and the server both order a volume's images along the slice normal).
  function imageOfAnswer(imageIds, answer) {
    const named = imageIds.filter((id) => Number(metadata("generalImageModule", id).instanceNumber) === answer.instance_number);
    if (answer.instance_number !== null && answer.instance_number !== undefined && named.length === 1) return named[0];
    return imageIds[answer.slice] || null;
  }

  // Moves each view of the answer's series to the mask's image (cornerstone's jumpToWorld: to that image's plane);
  // false when no view shows that series yet.
  function goToMask(answer) {
    let moved = false;
    for (const { viewport, imageIds } of viewsOfSeries(answer.image_id)) {
      const imageId = imageOfAnswer(imageIds, answer);
      const position = imageId && metadata("imagePlaneModule", imageId).imagePositionPatient;
      if (!position) continue;
      viewport.jumpToWorld(Array.from(position));
      moved = true;
    }
    return moved;
  }

  function hasMask(answer) {
    return typeof answer.slice === "number" && (answer.mask_pixels || 0) > 0;
  }

  // OHIF's bottom right "I:" label, replaced (a global customization, kept across modes) by one that names the DICOM
  // instance of the image cornerstone draws; views that are not in the acquisition plane show OHIF's counter alone.
  function nameTheImageDrawn(services) {
    const { customizationService, cornerstoneViewportService } = services;
    customizationService.setGlobalCustomization("cornerstoneOverlayBottomRight", {
      id: "cornerstoneOverlayBottomRight",
      items: [
        {
          id: "InstanceNumber",
          customizationType: "ohif.overlayItem",
          contentF: ({ viewportId, imageSliceData }) => {
            const counter = imageSliceData ? imageSliceData.imageIndex + 1 + "/" + imageSliceData.numberOfSlices : "";
            const viewport = cornerstoneViewportService.getCornerstoneViewport(viewportId);
            const imageId = viewport && viewport.getCurrentImageId && viewport.getCurrentImageId();
            const instance = imageId ? metadata("generalImageModule", imageId).instanceNumber : undefined;
            return instance === undefined || instance === null ? counter : "I: " + instance + " (" + counter + ")";
          },
        },
      ],
    });
  }

  function whenOhifIsUp(waitedMs) {
    const services = window.services;
    if (services && services.customizationService && services.cornerstoneViewportService && window.cornerstone) {
      try {
        nameTheImageDrawn(services);
      } catch (error) {
        console.error("MedReasoner answer panel: could not put OHIF's I: label right", error);
      }
      return;
    }
    if (waitedMs < GIVE_UP_MS) window.setTimeout(() => whenOhifIsUp(waitedMs + 100), 100);
    else console.warn("MedReasoner answer panel: OHIF's services never appeared; its I: label is OHIF's own");
  }

  // ---- Save label: the open series' labelmap, as a final label ----

  // The series on the active view (OHIF's display set); null when OHIF can't say.
  function activeSeries(services) {
    const { viewportGridService, displaySetService } = services;
    if (!viewportGridService || !displaySetService) return null;
    const grid = viewportGridService.getState();
    const viewport = grid.viewports && grid.viewports.get(grid.activeViewportId);
    const uid = viewport && viewport.displaySetInstanceUIDs && viewport.displaySetInstanceUIDs[0];
    const displaySet = uid && displaySetService.getDisplaySetByUID(uid);
    return (displaySet && displaySet.SeriesInstanceUID) || null;
  }

  // What to save, from OHIF's segmentation of the open series: {series, voxels} with the target segment's voxels 1
  // and every other 0, in the labelmap volume's order; an Error whose message the panel shows otherwise.
  function labelOfOpenSeries() {
    const services = window.services;
    const cornerstone = window.cornerstone;
    if (!services || !services.segmentationService || !cornerstone) throw new Error("OHIF's segmentation is not loaded yet.");
    const open = activeSeries(services);
    const found = [];
    for (const segmentation of services.segmentationService.getSegmentations()) {
      const labelmap = segmentation.representationData && segmentation.representationData.Labelmap;
      const image = labelmap && labelmap.referencedVolumeId && cornerstone.cache.getVolume(labelmap.referencedVolumeId);
      if (!image || !image.imageIds || !image.imageIds.length) continue;
      const series = metadata("generalSeriesModule", image.imageIds[0]).seriesInstanceUID;
      if (series && (!open || series === open)) found.push({ segmentation, labelmap, image, series });
    }
    if (found.length !== 1) {
      throw new Error(found.length ? "More than one segmentation of the open series; OHIF can't say which to save."
        : "No segmentation of the open series to save: run implicit_query (Auto-Segmentation) first.");
    }
    const { segmentation, labelmap, image, series } = found[0];
    const segment = Object.values(segmentation.segments || {}).find((one) => one && one.label === SAVED_SEGMENT);
    if (!segment) throw new Error("No '" + SAVED_SEGMENT + "' segment in OHIF's segmentation: run implicit_query first.");
    const volume = services.segmentationService.getLabelmapVolume(segmentation.segmentationId) ||
      (labelmap.volumeId && cornerstone.cache.getVolume(labelmap.volumeId));
    const values = volume && volume.voxelManager && volume.voxelManager.getCompleteScalarDataArray();
    const expected = image.dimensions ? image.dimensions[0] * image.dimensions[1] * image.dimensions[2] : -1;
    if (!values || values.length !== expected) throw new Error("OHIF's labelmap of the open series is not on its grid.");
    const index = Number(segment.segmentIndex);
    const voxels = new Uint8Array(values.length);
    for (let i = 0; i < values.length; i++) voxels[i] = values[i] === index ? 1 : 0;
    return { series, voxels };
  }

  // The server's reason for a refusal: FastAPI's {"detail": text} (a list of checks for a malformed request).
  async function refusalText(response) {
    let detail = null;
    try {
      detail = (await response.json()).detail;
    } catch (error) {
      // not JSON (a proxy's page): the status says enough
    }
    if (Array.isArray(detail)) detail = detail.map((one) => (one && one.msg) || String(one)).join("; ");
    return "Not saved (" + response.status + "): " + (typeof detail === "string" && detail ? detail : response.statusText || "refused");
  }

  // PUT /datastore/label as OHIF's client `save_label` sends it, tag final as Slicer's Submit Label; what the panel says.
  async function saveLabel() {
    let label;
    try {
      label = labelOfOpenSeries();
    } catch (error) {
      return { ok: false, text: "Not saved: " + error.message };
    }
    const form = new FormData();
    form.append("params", JSON.stringify({ label_info: [{ name: SAVED_SEGMENT, idx: 1 }] }));
    form.append("label", new Blob([label.voxels], { type: "application/octet-stream" }), "label.bin");
    const url = "/datastore/label?image=" + encodeURIComponent(label.series) + "&tag=final";
    let response;
    try {
      response = await fetch(url, { method: "PUT", body: form, credentials: "same-origin" });
    } catch (error) {
      return { ok: false, text: "Not saved: the server could not be reached (" + error.message + ")." };
    }
    if (!response.ok) return { ok: false, text: await refusalText(response) };
    const saved = await response.json();
    if (!saved.label) return { ok: false, text: "Not saved: the server's answer names no label." };
    let stored = "label stored";
    let answerId; // the answer the saved label records: the panel may not show it yet (it polls every 2 s)
    try {
      const read = await fetch("/datastore/label/info?label=" + encodeURIComponent(saved.label) + "&tag=final",
        { credentials: "same-origin" });
      const info = read.ok ? await read.json() : {};
      if (info.SeriesInstanceUID) stored = "SEG stored"; // in the PACS, with the SR beside it
      answerId = info.answer_id;
    } catch (error) {
      // saved all the same; only the wording is less precise
    }
    return { ok: true, answerId, text: "Saved: " + stored + (saved.report_series ? ", with its report (SR)" : "") + "." };
  }

  // ---- The panel ----

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

  function button(text, title, onClick) {
    const node = el("button", text, "background:none;border:1px solid #5acce6;color:#5acce6;border-radius:3px;cursor:pointer");
    node.type = "button";
    if (title) node.title = title;
    node.addEventListener("click", onClick);
    return node;
  }

  function sliceText(answer) {
    const slice = describe.slice(answer);
    if (slice === null) return "On the picture (2D).";
    const where = "Mask on " + slice;
    const carried = describe.carriedThrough(answer);
    const label = answer.instance_number === null || answer.instance_number === undefined ? "" : ", I: " + answer.instance_number + " in the view";
    return where + label + (carried ? ", carried through " + carried : "") + ".";
  }

  // "Q: " and the question as its own isolated text: an Arabic or Hebrew question reads right to left after it.
  function question(answer) {
    const line = el("div", undefined, "margin-top:6px;font-weight:600");
    line.append("Q: ", el("bdi", answer.question));
    return line;
  }

  function refusalBlock(refused) {
    const block = el("div", undefined, "margin-top:6px;padding:6px;border:1px solid #ff8a8a;border-radius:4px;color:#ffb3b3");
    block.id = "medreasoner-refused";
    block.dataset.refusalId = refused.refusal_id;
    block.append(el("strong", "Not run: "), el("span", refused.message));
    return block;
  }

  function show(answer, refused) {
    const box = panel();
    const header = el("div", undefined, "display:flex;justify-content:space-between;align-items:center");
    header.append(el("strong", "MedReasoner answer", "color:#5acce6"));
    header.append(button("Hide", null, () => { box.style.display = "none"; }));
    const parts = [header];
    if (refused) parts.push(refusalBlock(refused));
    if (answer) {
      const grounded = answer.status === "ok";
      const confidence = answer.confidence === undefined || answer.confidence === null ? "" : " · " + Math.round(100 * answer.confidence) + "% consistent";
      const refined = describe.refinedBy(answer);
      const version = (answer.reasoner_version || {}).version;
      const link = el("a", "All answers for this study", "color:#5acce6");
      link.href = "/answers/?study=" + encodeURIComponent(answer.study_uid || "");
      link.target = "_blank";
      link.rel = "noopener";
      parts.push(
        question(answer),
        el("div", describe.status(answer) + confidence + (refined ? " · " + refined : ""), "margin-top:4px;color:" + (grounded ? "#7ee07e" : "#ff8a8a")),
        el("div", answer.reasoning || "(no reasoning given)", "margin-top:6px;white-space:pre-wrap"),
        el("div", sliceText(answer), "margin-top:6px;color:#c8d3e6")
      );
      if (answer.clicks_read_as_background) {
        // This OHIF writes a Run's result only into the segment chosen, and only over empty pixels: a Run with
        // *background* chosen can't take anything out of the answer's segment (the server sent it nothing to draw).
        parts.push(el("div", "Background clicks taken; nothing drawn yet. OHIF draws a Run's result into the " +
          "segment chosen: choose the answer's segment (target) in Point Prompts and press Run to see the corrected mask.",
          "margin-top:6px;color:#ffd27f"));
      }
      if (hasMask(answer)) {
        const go = button("Go to the mask", "Show the image the mask is on", () => {
          if (!goToMask(answer)) go.textContent = "Open this series to go to the mask";
        });
        go.id = "medreasoner-go-to-mask";
        go.style.marginTop = "6px";
        parts.push(go);
      }
      parts.push(saveRow(answer));
      parts.push(
        el("div", "Model: " + (answer.reasoner || "?") + (version ? " (" + version + ")" : "") + " · " + (answer.answered_at || ""),
          "margin-top:6px;font-size:11px;color:#9fb0c8"),
        link
      );
      box.dataset.answerId = answer.answer_id;
    }
    box.replaceChildren(...parts);
    box.style.display = "block";
  }

  // "Save label" and what the last save of this answer's mask said (a new answer is a new mask: not saved yet).
  function saveRow(answer) {
    const row = el("div", undefined, "margin-top:6px");
    const status = el("div", undefined, "margin-top:4px");
    status.id = "medreasoner-save-status";
    const report = (outcome) => {
      saveStatus = { ...outcome, answerId: outcome.answerId || answer.answer_id };
      describe.put(status, outcome.text);
      status.style.color = outcome.ok === undefined ? "#c8d3e6" : outcome.ok ? "#7ee07e" : "#ffb3b3";
    };
    const save = button("Save label", "Save the open series' target segment as the final label (a DICOM SEG in the PACS)",
      async () => {
        save.disabled = true;
        report({ text: "Saving..." });
        try {
          report(await saveLabel());
        } catch (error) {
          report({ ok: false, text: "Not saved: " + error.message });
        } finally {
          save.disabled = false;
        }
      });
    save.id = "medreasoner-save-label";
    row.append(save);
    if (saveStatus && saveStatus.answerId === answer.answer_id) report(saveStatus);
    row.append(status);
    return row;
  }

  // After a Run the answer's series may still be loading: try again at the next polls.
  function jumpIfDue(answer) {
    if (!jump || !answer || jump.answerId !== answer.answer_id) return;
    if (goToMask(answer) || ++jump.tries >= JUMP_TRIES) jump = null;
  }

  async function poll() {
    const study = openStudy();
    let delay = POLL_MS;
    let answer = null;
    let refused = null;
    let polled = false;
    if (study && document.visibilityState !== "hidden") {
      try {
        const response = await fetch("/answers/list?limit=1&study=" + encodeURIComponent(study), { credentials: "same-origin" });
        if (!response.ok) delay = GIVE_UP_MS; // signed out, or no answer log on this server: ask again much later
        if (response.ok) {
          const listed = await response.json();
          answer = listed.answers[0] || null;
          refused = listed.refused || null;
          polled = true;
        }
      } catch (error) {
        // the server may be restarting; the next poll tries again
      }
    }
    window.setTimeout(poll, delay);
    if (!polled) return;
    if (answerAtStart === undefined) answerAtStart = answer ? answer.answer_id : null;
    const key = (answer ? answer.answer_id : "") + "|" + (refused ? refused.refusal_id : "");
    if (answer && hasMask(answer) && answer.answer_id !== answerAtStart && answer.answer_id !== lastJumpedTo) {
      jump = { answerId: answer.answer_id, tries: 0 };
      lastJumpedTo = answer.answer_id;
    }
    if ((answer || refused) && key !== shownKey) {
      show(answer, refused); // a drawing error shows in the console, and the next poll draws the answer again
      shownKey = key;
    }
    jumpIfDue(answer);
  }

  whenOhifIsUp(0);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", poll);
  else poll();
})();
