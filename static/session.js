// On every page: logging out removes this browser's labeling drafts (label.js keeps them in localStorage per
// annotator and item), so that the next person at a shared computer finds none of them.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    if (!event.target.matches("form.logout")) return;
    try {
      const store = window.localStorage;
      Object.keys(store).filter(key => key.startsWith("concord-draft:")).forEach(key => store.removeItem(key));
    } catch (error) {
      // No storage (a private window, a policy): there are no drafts either.
    }
  });
})();
