// The adjudication page (templates/curation/adjudicate.html). The form works without this; it adds:
// - focus on the error summary at the form's top when a decision was refused, so the eye and a screen reader
//   land on what to fix (each entry links to its field);
// - a final rating clicked again is cleared, since ratings are optional and a radio button cannot be unticked.
(function () {
  "use strict";

  function focusErrors() {
    const summary = document.querySelector(".decision-form .error-summary");
    if (summary) summary.focus();
  }

  function clearableRatings() {
    const ratings = document.querySelector(".final-ratings");
    if (!ratings) return;
    // Whether a button was ticked before this click: pointerdown comes before the click ticks it.
    let wasChecked = null;
    ratings.addEventListener("pointerdown", event => {
      const option = event.target.closest(".rating-option");
      wasChecked = option ? option.querySelector("input").checked : null;
    });
    ratings.addEventListener("click", event => {
      const option = event.target.closest(".rating-option");
      if (!option || event.target.tagName !== "INPUT") return;
      if (wasChecked) event.target.checked = false;
      wasChecked = null;
    });
  }

  focusErrors();
  clearableRatings();
})();
