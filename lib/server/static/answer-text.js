// How an answer reads to a person, in one place for the answers page (answers.js) and OHIF's answer panel
// (ohif-panel.js): its status, the clicks that corrected it, the slice its mask is on and the slices it was carried
// through. Plain strings: the callers draw them with textContent.
"use strict";
window.MedReasonerAnswerText = Object.freeze({
  status(answer) {
    if (answer.status === "ok") return "Grounded";
    if (answer.status === "not_found") return "Not in this image";
    return "No grounding" + (answer.reason ? ": " + answer.reason : "");
  },

  // "" for an answer the model gave; for one corrected in the viewer, how many clicks and that the model was not asked.
  refinedBy(answer) {
    const clicks = answer.refined_by_clicks;
    if (!clicks) return "";
    const count = clicks.foreground.length + clicks.background.length;
    return "corrected by " + count + (count === 1 ? " click" : " clicks") + ", model not asked again";
  },

  // "slice 7 of 12 (index 6, DICOM instance number 7)", or null for a 2D picture.
  slice(answer) {
    if (answer.slice === undefined || answer.slice === null) return null;
    const of = answer.num_slices ? " of " + answer.num_slices : "";
    const instance = answer.instance_number === undefined || answer.instance_number === null
      ? "" : ", DICOM instance number " + answer.instance_number;
    return "slice " + (answer.slice + 1) + of + " (index " + answer.slice + instance + ")";
  },

  // The slices a volume answer was carried through: "slices 4 to 9 (index 3 to 8)", or null when it was not.
  carriedThrough(answer) {
    const carried = answer.propagation;
    if (!carried) return null;
    const [first, last] = carried.slice_range;
    return "slices " + (first + 1) + " to " + (last + 1) + " (index " + first + " to " + last + ")";
  },
});
