// The labeling page's keyboard shortcuts, timing and error-span marking. Without this file the page still
// works (the form posts normally and the server redirects to the next item), except for marking spans.
//
// Span offsets are Python's: code points [start, end) into the stored response text. JavaScript strings count
// UTF-16 units, so every offset is converted on the way in and out (an emoji is one code point, two units).
// Marked text is drawn with text nodes and <mark> elements whose text is set with textContent, never HTML.
// Spans of one response may not overlap: a selection over a marked span is refused.
(function () {
  "use strict";
  let shownAt = performance.now();
  let shownItem = currentItem();
  let spans = []; // as posted in spans_json: {response, start, end, category}
  let texts = {}; // side -> the exact stored response text
  let pending = null; // a selection waiting for its category: {response, start, end}

  function card() { return document.getElementById("item-card"); }
  function form() { return document.getElementById("annotation-form"); }
  function popover() { const c = card(); return c ? c.querySelector(".span-popover") : null; }
  function popoverOpen() { const p = popover(); return Boolean(p && !p.hidden); }

  function currentItem() {
    const item = document.querySelector("#item-card [data-item-id]");
    return item ? item.dataset.itemId : null;
  }

  // Offsets.

  function codePointsIn(text) { return Array.from(text).length; }

  // unitAt[i] is where code point i starts in UTF-16 units; unitAt[n] is text.length.
  function unitIndex(text) {
    const unitAt = [0];
    let unit = 0;
    for (const ch of text) { unit += ch.length; unitAt.push(unit); }
    return unitAt;
  }

  // Where a DOM boundary point falls in the box's text, in UTF-16 units. A Range over the box counts the text
  // of every node in it, so the <mark> elements splitting the text do not matter.
  function unitOffset(box, node, offset) {
    const range = document.createRange();
    range.selectNodeContents(box);
    range.setEnd(node, offset);
    return range.toString().length;
  }

  // Categories.

  function categoryOf(name) {
    const c = card();
    const button = c && Array.from(c.querySelectorAll(".span-category")).find(b => b.dataset.category === name);
    return button
      ? { color: button.dataset.color, label: button.dataset.label }
      : { color: "#9aa0a6", label: String(name) };
  }

  // Drawing.

  function validSpan(span, length) {
    return span && typeof span === "object" && Number.isInteger(span.start) && Number.isInteger(span.end) &&
      span.start >= 0 && span.start < span.end && span.end <= length;
  }

  function drawText(box, side) {
    const text = texts[side];
    const unitAt = unitIndex(text);
    const length = unitAt.length - 1;
    const mine = spans.map((span, index) => ({ span, index }))
      .filter(entry => entry.span && entry.span.response === side && validSpan(entry.span, length));
    const cuts = new Set([0, length]);
    mine.forEach(({ span }) => { cuts.add(span.start); cuts.add(span.end); });
    const points = Array.from(cuts).sort((x, y) => x - y);
    const nodes = [];
    for (let i = 0; i + 1 < points.length; i++) {
      const piece = text.slice(unitAt[points[i]], unitAt[points[i + 1]]);
      // Overlaps cannot be made here, but a posted list may hold them: the latest span covering a piece wins.
      const covering = mine.filter(({ span }) => span.start <= points[i] && span.end >= points[i + 1]);
      if (covering.length === 0) { nodes.push(document.createTextNode(piece)); continue; }
      const { span, index } = covering[covering.length - 1];
      const category = categoryOf(span.category);
      const mark = document.createElement("mark");
      mark.className = "span-mark";
      mark.dataset.span = String(index);
      mark.dataset.category = String(span.category);
      mark.title = category.label;
      mark.style.backgroundColor = category.color + "55";
      mark.style.borderBottomColor = category.color;
      mark.textContent = piece;
      nodes.push(mark);
    }
    box.replaceChildren(...nodes);
  }

  function spanItem(span, index, side) {
    const text = texts[side];
    const category = categoryOf(span.category);
    const item = document.createElement("li");
    item.className = "span-item";
    item.dataset.span = String(index);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = category.color;
    const name = document.createElement("span");
    name.className = "span-category-name";
    name.textContent = category.label;
    const quote = document.createElement("q");
    quote.className = "span-quote";
    if (validSpan(span, codePointsIn(text))) {
      const unitAt = unitIndex(text);
      quote.textContent = text.slice(unitAt[span.start], unitAt[span.end]);
    } else {
      quote.textContent = "characters " + span.start + "–" + span.end + ", not in this response";
      item.classList.add("is-invalid");
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "span-remove";
    remove.textContent = "×";
    remove.setAttribute("aria-label", "Remove " + category.label + " span: " + quote.textContent);
    item.append(swatch, name, quote, remove);
    return item;
  }

  function drawList(c, side) {
    const list = c.querySelector('.span-list[data-side="' + side + '"]');
    if (!list) return;
    const items = [];
    spans.forEach((span, index) => {
      if (span && typeof span === "object" && span.response === side) items.push(spanItem(span, index, side));
    });
    list.replaceChildren(...items);
    const empty = list.parentElement.querySelector(".span-empty");
    if (empty) empty.hidden = items.length > 0;
    const count = c.querySelector('.span-count[data-side="' + side + '"]');
    if (count) count.textContent = items.length ? "(" + items.length + ")" : "";
  }

  function draw() {
    const c = card();
    if (!c) return;
    c.querySelectorAll(".response-text").forEach(box => {
      drawText(box, box.dataset.side);
      drawList(c, box.dataset.side);
    });
  }

  function save() {
    const input = form() && form().querySelector("input[name=spans_json]");
    if (input) input.value = JSON.stringify(spans);
  }

  // Marking.

  function overlapping(candidate) {
    return spans.findIndex(span => span && span.response === candidate.response &&
      span.start < candidate.end && candidate.start < span.end);
  }

  function selectionSpan() {
    const selection = window.getSelection();
    if (!selection || selection.isCollapsed || selection.rangeCount === 0) return null;
    const range = selection.getRangeAt(0);
    const boxOf = node => {
      const element = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
      return element ? element.closest("#item-card .response-text") : null;
    };
    const box = boxOf(range.startContainer);
    if (!box || box !== boxOf(range.endContainer)) return null;
    const text = texts[box.dataset.side];
    let from = unitOffset(box, range.startContainer, range.startOffset);
    let to = unitOffset(box, range.endContainer, range.endOffset);
    // Whitespace at either end is almost always an accident of dragging.
    while (from < to && /\s/.test(text[from])) from++;
    while (to > from && /\s/.test(text[to - 1])) to--;
    if (from >= to) return null;
    return {
      response: box.dataset.side,
      start: codePointsIn(text.slice(0, from)),
      end: codePointsIn(text.slice(0, to)),
      rect: range.getBoundingClientRect(),
    };
  }

  function showPopover(candidate) {
    const p = popover();
    if (!p) return;
    const clash = overlapping(candidate);
    const note = p.querySelector(".span-popover-note");
    note.hidden = clash < 0;
    note.textContent = clash < 0 ? "" : "This overlaps a marked span. Remove that one first (×).";
    p.querySelectorAll(".span-category").forEach(button => { button.disabled = clash >= 0; });
    pending = clash < 0 ? { response: candidate.response, start: candidate.start, end: candidate.end } : null;
    p.hidden = false;
    // The card is not positioned, so these are page coordinates.
    const left = Math.min(candidate.rect.left, window.innerWidth - p.offsetWidth - 12);
    p.style.left = Math.max(8, left) + window.scrollX + "px";
    p.style.top = candidate.rect.bottom + window.scrollY + 6 + "px";
  }

  function hidePopover() {
    const p = popover();
    if (p) p.hidden = true;
    pending = null;
  }

  function addSpan(category) {
    if (!pending) return;
    spans.push({ response: pending.response, start: pending.start, end: pending.end, category: category });
    hidePopover();
    window.getSelection().removeAllRanges();
    save();
    draw();
  }

  function removeSpan(index) {
    spans.splice(index, 1);
    save();
    draw();
  }

  function setUpCard() {
    const c = card();
    hidePopover();
    texts = {};
    spans = [];
    if (!c) return;
    c.querySelectorAll(".response-text").forEach(box => {
      texts[box.dataset.side] = "exact" in box.dataset ? JSON.parse(box.dataset.exact) : box.textContent;
    });
    c.querySelectorAll(".copy-original").forEach(button => { button.hidden = false; });
    updateCount();
    const input = c.querySelector("input[name=spans_json]");
    if (!input) return;
    try {
      const posted = JSON.parse(input.value || "[]");
      spans = Array.isArray(posted) ? posted : [];
    } catch (error) {
      spans = [];
    }
    draw();
  }

  document.addEventListener("mouseup", function (event) {
    const p = popover();
    if (!p || p.contains(event.target)) return;
    // The selection settles after mouseup (a click inside a selection clears it only then).
    setTimeout(function () {
      const candidate = selectionSpan();
      if (candidate) showPopover(candidate);
    }, 0);
  });

  document.addEventListener("mousedown", function (event) {
    if (popoverOpen() && !popover().contains(event.target)) hidePopover();
  });

  document.addEventListener("click", function (event) {
    const target = event.target instanceof Element ? event.target : null;
    if (!target || !target.closest("#item-card")) return;
    const category = target.closest(".span-category");
    if (category) { addSpan(category.dataset.category); return; }
    const remove = target.closest(".span-remove");
    if (remove) { removeSpan(Number(remove.closest(".span-item").dataset.span)); return; }
    const copy = target.closest(".copy-original");
    if (copy) {
      const box = document.getElementById("correction-" + copy.dataset.side);
      box.value = texts[copy.dataset.side];
      box.focus();
    }
  });

  // A marked span and its entry in the list light up together.
  function hot(event, on) {
    const target = event.target instanceof Element ? event.target : null;
    const entry = target && target.closest("#item-card .span-item, #item-card .span-mark");
    if (!entry) return;
    card().querySelectorAll('[data-span="' + entry.dataset.span + '"]').forEach(el => el.classList.toggle("is-hot", on));
  }
  document.addEventListener("mouseover", event => hot(event, true));
  document.addEventListener("mouseout", event => hot(event, false));

  // Keyboard.

  function typing(event) {
    const target = event.target;
    if (target.isContentEditable) return true;
    const tag = target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" ||
      tag === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(target.type);
  }

  // Plain Enter submits only from the page itself or an option (strength or rating), so Enter on a link,
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

  function focusRow(row) {
    const input = row.querySelector("input:checked") || row.querySelector("input");
    if (input) input.focus();
  }

  // Quick rating: in a rating row a digit picks that value and moves on to the next row.
  function rateWithKey(row, key) {
    const input = row.querySelector('input[value="' + key + '"]');
    if (!input) return;
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    const rows = Array.from(form().querySelectorAll(".rating-row"));
    const next = rows[rows.indexOf(row) + 1];
    focusRow(next || row);
  }

  function firstUnratedRow() {
    const rows = Array.from(form().querySelectorAll(".rating-row"));
    return rows.find(row => !row.querySelector("input:checked")) || rows[0];
  }

  function chooseCategoryWithKey(event) {
    if (event.key === "Escape") { event.preventDefault(); hidePopover(); return; }
    const button = popover().querySelector('.span-category[data-key="' + event.key + '"]');
    if (button && !button.disabled) { event.preventDefault(); addSpan(button.dataset.category); }
  }

  document.addEventListener("keydown", function (event) {
    const f = form();
    if (!f || event.altKey) return;
    if (popoverOpen() && !event.ctrlKey && !event.metaKey) { chooseCategoryWithKey(event); return; }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey) return;
    const row = event.target.closest ? event.target.closest(".rating-row") : null;
    if (row && /^[0-9]$/.test(event.key)) {
      event.preventDefault(); rateWithKey(row, event.key);
    } else if (/^[1-9]$/.test(event.key)) {
      const option = f.querySelector('.strength-option[data-key="' + event.key + '"] input');
      if (option) { option.checked = true; option.focus(); event.preventDefault(); }
    } else if (event.key === "Enter" && enterSubmits(event)) {
      event.preventDefault(); submit();
    } else if (event.key === "j") {
      const box = document.getElementById("justification");
      if (box) { event.preventDefault(); box.focus(); }
    } else if (event.key === "r") {
      const next = firstUnratedRow();
      if (next) { event.preventDefault(); focusRow(next); }
    }
  });

  // Justification length against the project's minimum.
  function updateCount() {
    const box = document.getElementById("justification");
    const count = document.querySelector('.char-count[data-for="justification"]');
    if (!box || !count) return;
    const length = box.value.trim().length;
    count.textContent = length + " / " + box.dataset.min + " characters";
    count.classList.toggle("is-short", length > 0 && length < Number(box.dataset.min));
  }
  document.addEventListener("input", function (event) {
    if (event.target.id === "justification") updateCount();
  });

  // A plain click on Submit also records the time spent.
  document.addEventListener("submit", function (event) {
    const f = form();
    if (event.target === f) stampTime(f);
  }, true);

  document.addEventListener("htmx:afterSwap", function () {
    // htmx gives focus back to the element with the same id in the new card (the justification box);
    // a fresh card starts unfocused so that the digit keys pick a strength.
    const active = document.activeElement;
    if (active && active.closest("#item-card")) active.blur();
    // The clock restarts for a new item, not when a refused submit shows the same item again.
    const item = currentItem();
    if (item !== shownItem) { shownItem = item; shownAt = performance.now(); }
    setUpCard();
  });

  setUpCard();
})();
