// How an answer reads to a person, in one place for the answers page (answers.js) and OHIF's answer panel
// (ohif-panel.js): its status, the clicks that corrected it, the slice its mask is on and the slices it was carried
// through. Plain strings, and `put`, the one way the callers draw any text of a question or an answer (textContent).
"use strict";
window.MedReasonerAnswerText = Object.freeze({
  // The text as written, with each of Unicode's bidirectional controls (U+061C, U+200E-200F, U+202A-202E,
  // U+2066-2069) shown as a visible escape such as "\u27E8U+202E\u27E9" (escaped here so the file reads alike in any
  // page encoding): a right-to-left override in a question or a model's answer would show it in another order.
  visible(text) {
    return String(text).replace(
      /\p{Bidi_Control}/gu,
      (control) => "\u27E8U+" + control.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "\u27E9"
    );
  },

  // Puts a text on screen: as textContent, its bidirectional controls made visible, and isolated from the text around
  // it (dir=auto: the browser sets unicode-bidi: isolate and takes its direction from the text itself, so Arabic or
  // Hebrew still reads right to left) so that no field reorders another.
  put(node, text) {
    node.textContent = window.MedReasonerAnswerText.visible(text);
    node.dir = "auto";
    return node;
  },

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

  // A PACS series' slice by the DICOM instance it is, as the archive, the SEG and the SR name it (and OHIF's "I:"
  // label, put right by ohif-panel.js): "DICOM instance 7 (index 6 of 12 slices)"; another volume's by its place in
  // the volume: "slice 7 of 12 (index 6)"; null for a 2D picture. The index counts along the slice normal, as ITK does.
  slice(answer) {
    if (answer.slice === undefined || answer.slice === null) return null;
    if (answer.instance_number !== undefined && answer.instance_number !== null) {
      const of = answer.num_slices ? " of " + answer.num_slices + " slices" : "";
      return "DICOM instance " + answer.instance_number + " (index " + answer.slice + of + ")";
    }
    const of = answer.num_slices ? " of " + answer.num_slices : "";
    return "slice " + (answer.slice + 1) + of + " (index " + answer.slice + ")";
  },

  // The slices a volume answer was carried through: "slices 4 to 9 (index 3 to 8)", or null when it was not.
  carriedThrough(answer) {
    const carried = answer.propagation;
    if (!carried) return null;
    const [first, last] = carried.slice_range;
    return "slices " + (first + 1) + " to " + (last + 1) + " (index " + first + " to " + last + ")";
  },
});
