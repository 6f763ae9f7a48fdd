// Keyboard shortcuts and timing for the labeling page. The page works without this file:
// the form posts normally and the server redirects to the next item.
(function () {
  "use strict";
  let shownAt = performance.now();

  function form() { return document.getElementById("annotation-form"); }

  function typing(event) {
    const tag = event.target.tagName;
    return tag === "TEXTAREA" || tag === "INPUT" && event.target.type !== "radio" || tag === "SELECT";
  }

  function submit() {
    const f = form();
    if (!f) return;
    f.querySelector("input[name=seconds_spent]").value = ((performance.now() - shownAt) / 1000).toFixed(1);
    f.requestSubmit();
  }

  document.addEventListener("keydown", function (event) {
    const f = form();
    if (!f || event.altKey || event.metaKey && event.key !== "Enter") return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); return; }
    if (typing(event) || event.ctrlKey) return;
    if (event.key >= "1" && event.key <= "7") {
      const option = f.querySelector('.strength-option[data-key="' + event.key + '"] input');
      if (option) { option.checked = true; option.focus(); event.preventDefault(); }
    } else if (event.key === "Enter") {
      event.preventDefault(); submit();
    } else if (event.key === "j") {
      event.preventDefault(); document.getElementById("justification").focus();
    }
  });

  // A plain click on Submit also records the time spent.
  document.addEventListener("submit", function (event) {
    const f = form();
    if (event.target === f) {
      f.querySelector("input[name=seconds_spent]").value = ((performance.now() - shownAt) / 1000).toFixed(1);
    }
  }, true);

  // Each new item swapped in restarts the clock.
  document.addEventListener("htmx:afterSwap", function () { shownAt = performance.now(); });
})();
