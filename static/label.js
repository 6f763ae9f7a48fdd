// Keyboard shortcuts and timing for the labeling page. The page works without this file:
// the form posts normally and the server redirects to the next item.
(function () {
  "use strict";
  let shownAt = performance.now();
  let shownItem = currentItem();

  function form() { return document.getElementById("annotation-form"); }

  function currentItem() {
    const item = document.querySelector("#item-card [data-item-id]");
    return item ? item.dataset.itemId : null;
  }

  function typing(event) {
    const tag = event.target.tagName;
    return tag === "TEXTAREA" || tag === "INPUT" && event.target.type !== "radio" || tag === "SELECT";
  }

  // Plain Enter submits only from the page itself or a strength option, so Enter on a link,
  // a button or the skip toggle keeps its usual meaning.
  function enterSubmits(event) {
    return event.target === document.body || event.target.matches("input[type=radio]");
  }

  function stampTime(f) {
    const seconds = Math.max(0.1, (performance.now() - shownAt) / 1000);
    f.querySelector("input[name=seconds_spent]").value = seconds.toFixed(1);
  }

  function submit() {
    const f = form();
    if (!f) return;
    stampTime(f);
    f.requestSubmit();
  }

  document.addEventListener("keydown", function (event) {
    const f = form();
    if (!f || event.altKey) return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey) return;
    if (event.key >= "1" && event.key <= "7") {
      const option = f.querySelector('.strength-option[data-key="' + event.key + '"] input');
      if (option) { option.checked = true; option.focus(); event.preventDefault(); }
    } else if (event.key === "Enter" && enterSubmits(event)) {
      event.preventDefault(); submit();
    } else if (event.key === "j") {
      event.preventDefault(); document.getElementById("justification").focus();
    }
  });

  // A plain click on Submit also records the time spent.
  document.addEventListener("submit", function (event) {
    const f = form();
    if (event.target === f) stampTime(f);
  }, true);

  document.addEventListener("htmx:afterSwap", function () {
    // htmx gives focus back to the element with the same id in the new card (the justification box);
    // a fresh card starts unfocused so that 1-7 pick a strength.
    const active = document.activeElement;
    if (active && active.closest("#item-card")) active.blur();
    // The clock restarts for a new item, not when a refused submit shows the same item again.
    const item = currentItem();
    if (item !== shownItem) { shownItem = item; shownAt = performance.now(); }
  });
})();
