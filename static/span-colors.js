// The adjudication page's marked spans take their category's colour from data-color. It is set here, through
// each element's style object, because the Content-Security-Policy refuses style="..." attributes; without this
// file a marked span is still underlined (review.css) and named in its title.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("mark.span-mark[data-color]").forEach(function (mark) {
      mark.style.backgroundColor = mark.dataset.color + "55"; // the colour at one third opacity
      mark.style.borderBottomColor = mark.dataset.color;
    });
  });
})();
