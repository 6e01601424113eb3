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
//   whose normal points to the head (the usual axial CT) it named the mirrored instance (README, What we found about
//   OHIF). The position counter after it, "(6/12)", is OHIF's own: the n-th image from the top of the view.
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
