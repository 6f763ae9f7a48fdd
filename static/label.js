// The labeling page's keyboard shortcuts, timing, error-span marking and drafts. Without this file the page
// still works (the form posts normally and the server redirects to the next item), except for marking spans.
//
// Keys do what the hints on the page say. Digits pick the preference, except while rating by keyboard: `r`
// starts that mode, each digit rates one row, and the mode ends after the last row or on Escape.
//
// Work in progress is kept as a draft in localStorage per annotator and item, so that a reload brings it back;
// it is dropped once the server has the item's answer (the card has moved on to another item).
//
// Span offsets are Python's: code points [start, end) into the stored response text. JavaScript strings count
// UTF-16 units, so every offset is converted on the way in and out (an emoji is one code point, two units).
// Marked text is drawn with text nodes and <mark> elements whose text is set with textContent, never HTML.
// Spans of one response may not overlap: a selection over a marked span is refused.
//
// Spans can be marked with the keyboard too: Tab to a response's text, move with the arrow keys (Home, End;
// Ctrl or Alt for a word), extend the selection with Shift, then press a category key. The moves are the
// browser's own (Selection.modify), so the selection is the very kind a mouse makes and is measured the same way.
//
// "Show formatting" shows each prompt turn and response as the server formatted it (Markdown, sanitised) instead
// of the raw text; the choice is kept per browser. Spans are marked on the raw text only.
(function () {
  "use strict";
  let shownAt = performance.now();
  let shownItem = currentItem();
  let spans = []; // as posted in spans_json: {response, start, end, category}
  let texts = {}; // side -> the exact stored response text
  let pending = null; // a selection waiting for its category: {response, start, end}
  let ratingRow = null; // the row the digits rate while rating by keyboard; null outside that mode
  let dirty = false; // the card holds changes the server has not acknowledged
  let keyboardSelection = false; // the pending selection was made with the keyboard

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

  function saveSpans() {
    const input = form() && form().querySelector("input[name=spans_json]");
    if (input) input.value = JSON.stringify(spans);
    changed();
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
    keyboardSelection = false;
  }

  function addSpan(category) {
    if (!pending) return;
    const span = { response: pending.response, start: pending.start, end: pending.end, category: category };
    const byKeyboard = keyboardSelection;
    spans.push(span);
    hidePopover();
    window.getSelection().removeAllRanges();
    saveSpans();
    draw();
    const text = texts[span.response], unitAt = unitIndex(text);
    announce("Marked " + quoted(text.slice(unitAt[span.start], unitAt[span.end])) + " in response " +
      span.response.toUpperCase() + " as " + categoryOf(category).label + ".");
    const box = responseBoxOf(span.response);
    if (byKeyboard && box && document.activeElement === box) caretAt(box, unitAt[span.end]);
  }

  function removeSpan(index) {
    spans.splice(index, 1);
    saveSpans();
    draw();
  }

  function setUpCard() {
    const c = card();
    hidePopover();
    hideCaret();
    setUpFormatting();
    ratingRow = null;
    texts = {};
    spans = [];
    if (!c) return;
    c.querySelectorAll(".response-text").forEach(box => {
      texts[box.dataset.side] = "exact" in box.dataset ? JSON.parse(box.dataset.exact) : box.textContent;
    });
    c.querySelectorAll(".copy-original").forEach(button => { button.hidden = false; });
    restoreDraft();
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
      changed();
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

  // Announcements for screen readers (the card's aria-live region).

  function quoted(text) {
    const flat = text.replace(/\s+/g, " ").trim();
    return "“" + (flat.length > 80 ? flat.slice(0, 79) + "…" : flat) + "”";
  }

  function announce(message) {
    const live = card() && card().querySelector(".span-live");
    if (live) live.textContent = message;
  }

  // Marking with the keyboard.

  function responseBoxOf(side) {
    const c = card();
    return c ? c.querySelector('.response-text[data-side="' + side + '"]') : null;
  }

  function responseBoxAt(target) {
    return target instanceof Element ? target.closest("#item-card .response-text[tabindex]") : null;
  }

  // The DOM point `units` UTF-16 units into the box's text (marks split it into several text nodes).
  function pointAt(box, units) {
    const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
    let last = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (units <= node.data.length) return [node, units];
      units -= node.data.length;
      last = node;
    }
    return last ? [last, last.data.length] : [box, 0];
  }

  function caretAt(box, units) {
    const [node, offset] = pointAt(box, units);
    window.getSelection().collapse(node, offset);
    showCaret(box);
  }

  function selectionIn(box) {
    const selection = window.getSelection();
    return selection.rangeCount > 0 && box.contains(selection.anchorNode) && box.contains(selection.focusNode);
  }

  // A collapsed selection in text that is not editable is invisible, so a thin bar is drawn where it is.
  function caretElement() {
    let caret = document.querySelector(".kbd-caret");
    if (!caret) {
      caret = document.createElement("span");
      caret.className = "kbd-caret";
      caret.setAttribute("aria-hidden", "true");
      caret.hidden = true;
      document.body.append(caret);
    }
    return caret;
  }

  function hideCaret() {
    const caret = document.querySelector(".kbd-caret");
    if (caret) caret.hidden = true;
  }

  // The caret drawn at the focus end of the selection, which a key's move keeps in view inside the box's own
  // scroll area (a scroll by the reader only moves the drawing along).
  function showCaret(box, keepInView = true) {
    const selection = window.getSelection();
    if (!selection.rangeCount) { hideCaret(); return; }
    const range = document.createRange();
    range.setStart(selection.focusNode, selection.focusOffset);
    let rect = range.getBoundingClientRect();
    const view = box.getBoundingClientRect();
    if (keepInView && rect.bottom > view.bottom) box.scrollTop += rect.bottom - view.bottom + 4;
    if (keepInView && rect.top < view.top) box.scrollTop -= view.top - rect.top + 4;
    rect = range.getBoundingClientRect();
    const caret = caretElement();
    caret.hidden = !selection.isCollapsed || rect.height === 0;
    caret.style.left = rect.left + window.scrollX + "px";
    caret.style.top = rect.top + window.scrollY + "px";
    caret.style.height = rect.height + "px";
  }

  const MOVES = {
    ArrowLeft: ["backward", "character"], ArrowRight: ["forward", "character"],
    ArrowUp: ["backward", "line"], ArrowDown: ["forward", "line"],
    Home: ["backward", "lineboundary"], End: ["forward", "lineboundary"],
  };

  // One arrow key in a focused response: move the caret, or with Shift extend the selection, never past the
  // response's own text. Returns what was moved over, for the announcement.
  function moveInResponse(box, event) {
    const selection = window.getSelection();
    if (!selectionIn(box)) caretAt(box, 0);
    const [direction, unit] = MOVES[event.key];
    const byWord = (event.ctrlKey || event.altKey) && unit === "character";
    const before = [selection.anchorNode, selection.anchorOffset, selection.focusNode, selection.focusOffset];
    selection.modify(event.shiftKey ? "extend" : "move", direction, byWord ? "word" : unit);
    if (!selectionIn(box)) { selection.setBaseAndExtent(...before); return ""; }
    const passed = document.createRange();
    passed.setStart(before[2], before[3]);
    passed.setEnd(selection.focusNode, selection.focusOffset);
    if (passed.collapsed) { passed.setStart(selection.focusNode, selection.focusOffset); passed.setEnd(before[2], before[3]); }
    return passed.toString();
  }

  function keyInResponse(event) {
    const box = responseBoxAt(event.target);
    if (!box || event.metaKey || !(event.key in MOVES)) return false;
    event.preventDefault();
    const passed = moveInResponse(box, event);
    showCaret(box);
    const candidate = selectionSpan();
    const side = box.dataset.side.toUpperCase();
    if (event.shiftKey && candidate) {
      showPopover(candidate);
      keyboardSelection = true;
      const text = texts[candidate.response], unitAt = unitIndex(text);
      const chosen = quoted(text.slice(unitAt[candidate.start], unitAt[candidate.end]));
      announce(pending ? chosen + " selected in response " + side + ": a key 1–" +
        popover().querySelectorAll(".span-category").length + " marks it, Esc cancels."
        : chosen + " overlaps a marked span: remove that one first.");
    } else {
      hidePopover();
      if (event.shiftKey) announce("Nothing selected.");
      else if (passed === "") announce("Edge of response " + side + ".");
      else if (!passed.trim()) announce(passed.includes("\n") ? "New line." : "Space.");
      else announce(quoted(passed));
    }
    return true;
  }

  // Escape after a keyboard selection drops it, leaving the caret where the selection ended.
  function cancelKeyboardSelection() {
    const selection = window.getSelection();
    hidePopover();
    const box = responseBoxAt(document.activeElement);
    if (box && selectionIn(box)) {
      selection.collapse(selection.focusNode, selection.focusOffset);
      showCaret(box);
    }
    announce("Selection cancelled.");
  }

  // Tabbing to a response puts the caret at its start (a click puts it where it lands, as usual).
  document.addEventListener("focusin", function (event) {
    const box = responseBoxAt(event.target);
    if (!box || event.target !== box || !box.matches(":focus-visible")) return;
    if (!selectionIn(box)) caretAt(box, 0); else showCaret(box);
  });
  document.addEventListener("focusout", function (event) {
    if (responseBoxAt(event.target)) hideCaret();
  });
  document.addEventListener("mousedown", hideCaret);
  document.addEventListener("scroll", function () {
    const box = responseBoxAt(document.activeElement);
    if (box && !document.querySelector(".kbd-caret[hidden]")) showCaret(box, false);
  }, true);

  // Show formatting.

  const FORMATTING_KEY = "concord-show-formatting";

  function formattingWanted() {
    const store = storage();
    try { return Boolean(store && store.getItem(FORMATTING_KEY) === "on"); } catch (error) { return false; }
  }

  function applyFormatting(on) {
    document.documentElement.classList.toggle("show-formatting", on);
    const c = card();
    if (c) c.querySelectorAll(".format-toggle").forEach(toggle => { toggle.checked = on; });
    if (!on) return;
    // Marking works on the raw text alone: a selection or popover over it goes with it.
    const box = responseBoxAt(document.activeElement);
    if (box) box.blur();
    if (popoverOpen()) { hidePopover(); window.getSelection().removeAllRanges(); }
    hideCaret();
  }

  function setUpFormatting() {
    const c = card();
    if (c) c.querySelectorAll(".format-option").forEach(option => { option.hidden = false; });
    applyFormatting(formattingWanted());
  }

  document.addEventListener("change", function (event) {
    const toggle = event.target instanceof Element ? event.target.closest("#item-card .format-toggle") : null;
    if (!toggle) return;
    const store = storage();
    try { if (store) store.setItem(FORMATTING_KEY, toggle.checked ? "on" : "off"); } catch (error) { /* unkept */ }
    applyFormatting(toggle.checked);
    if (card().querySelector(".span-live")) {
      announce(toggle.checked ? "Formatting shown. Errors are marked on the raw text: untick Show formatting to mark one."
        : "Raw text shown.");
    }
  });

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

  function secondsSpent() { return Math.max(0.1, (performance.now() - shownAt) / 1000); }

  function stampTime(f) {
    f.querySelector("input[name=seconds_spent]").value = secondsSpent().toFixed(1);
  }

  function submit() {
    const f = form();
    if (!f) return;
    stampTime(f);
    f.requestSubmit();
  }

  // Checked from a key: announced like a click, so that the draft keeps it.
  function check(input) {
    input.checked = true;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function choosePreferenceWithKey(f, key) {
    const option = f.querySelector('.strength-option[data-key="' + key + '"] input');
    if (!option) return false;
    check(option);
    option.focus();
    return true;
  }

  // Rating by keyboard is a mode, so that a digit means one thing at a time: while it is on, digits rate the
  // highlighted row; once it is off, they pick the preference again, whatever has focus.

  function ratingRows() { return Array.from(form().querySelectorAll(".rating-row")); }

  function firstUnratedRow() {
    const rows = ratingRows();
    return rows.find(row => !row.querySelector("input:checked")) || rows[0];
  }

  function rateRow(row) {
    if (ratingRow) ratingRow.classList.remove("is-rating");
    ratingRow = row;
    row.classList.add("is-rating");
    // Focus follows, for screen readers and the attribute's tooltip; but the mode, not focus, decides what a
    // digit does.
    const input = row.querySelector("input:checked") || row.querySelector("input");
    if (input) input.focus();
    showHints();
  }

  // `release` (after the last row, or Escape) also takes focus off the row, so that Enter and the digits act
  // on the page again. Focus moved elsewhere by Tab or the mouse stays where it went.
  function stopRating(release) {
    if (!ratingRow) return;
    ratingRow.classList.remove("is-rating");
    ratingRow = null;
    const active = document.activeElement;
    if (release && active && active.closest(".rating-row")) active.blur();
    showHints();
  }

  function rateWithKey(key) {
    const input = ratingRow.querySelector('input[value="' + key + '"]');
    if (!input) return; // not on this row's scale: the row waits for a digit that is
    check(input);
    const rows = ratingRows();
    const next = rows[rows.indexOf(ratingRow) + 1];
    if (next) rateRow(next); else stopRating(true);
  }

  // Digits and Escape belong to the mode while it is on; other keys keep their meaning.
  function keyWhileRating(event) {
    if (event.key === "Escape") { event.preventDefault(); stopRating(true); return true; }
    if (!/^[0-9]$/.test(event.key)) return false;
    event.preventDefault();
    rateWithKey(event.key);
    return true;
  }

  // The hints keep the server's words outside the mode (read once, before the first change) and say what the
  // digits do inside it.
  function idleText(hint) {
    if (!("idle" in hint.dataset)) hint.dataset.idle = hint.textContent;
    return hint.dataset.idle;
  }

  function showHints() {
    const c = card();
    if (!c) return;
    const side = ratingRow ? ratingRow.closest(".response").dataset.side : null;
    c.querySelectorAll(".rating-hint").forEach(hint => {
      const idle = idleText(hint);
      const active = side === hint.dataset.side;
      hint.classList.toggle("is-active", active);
      hint.textContent = active
        ? "digits rate " + ratingRow.querySelector(".rating-name").textContent + " of " + side.toUpperCase() +
          " · Esc to leave"
        : idle;
    });
    c.querySelectorAll(".strength-hint").forEach(hint => {
      const idle = idleText(hint);
      hint.textContent = ratingRow ? idle + " after Esc" : idle;
    });
  }

  function chooseCategoryWithKey(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      if (keyboardSelection) cancelKeyboardSelection(); else hidePopover();
      return;
    }
    const button = popover().querySelector('.span-category[data-key="' + event.key + '"]');
    if (button && !button.disabled) { event.preventDefault(); addSpan(button.dataset.category); }
  }

  document.addEventListener("keydown", function (event) {
    const f = form();
    if (!f || keyInResponse(event) || event.altKey) return;
    if (popoverOpen() && !event.ctrlKey && !event.metaKey) { chooseCategoryWithKey(event); return; }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey) return;
    if (ratingRow && keyWhileRating(event)) return;
    if (/^[1-9]$/.test(event.key)) {
      if (choosePreferenceWithKey(f, event.key)) event.preventDefault();
    } else if (event.key === "Enter" && enterSubmits(event)) {
      event.preventDefault(); submit();
    } else if (event.key === "j") {
      const box = document.getElementById("justification");
      if (box) { event.preventDefault(); box.focus(); }
    } else if (event.key === "r") {
      const row = firstUnratedRow();
      if (row) { event.preventDefault(); rateRow(row); }
    }
  });

  // Tabbing out of the highlighted row, or using the mouse, ends the mode: a rating clicked with the mouse
  // must not take the digits typed next.
  document.addEventListener("focusin", function (event) {
    if (ratingRow && !ratingRow.contains(event.target)) stopRating(false);
  });
  document.addEventListener("mousedown", function () { stopRating(false); });

  // Justification length against the project's minimum.
  function updateCount() {
    const box = document.getElementById("justification");
    const count = document.querySelector('.char-count[data-for="justification"]');
    if (!box || !count) return;
    const length = box.value.trim().length;
    count.textContent = length + " / " + box.dataset.min + " characters";
    count.classList.toggle("is-short", length > 0 && length < Number(box.dataset.min));
  }

  // Drafts. Each change to the annotation form is kept in localStorage under the annotator and the item, and put
  // back when that item is shown again (a reload, a crash, a refused skip that redraws the card). A card the
  // server drew from a refused submit already shows what was posted, so it keeps that instead.

  const DRAFT_PREFIX = "concord-draft:";
  const DRAFT_FIELD = /^(strength$|justification$|spans_json$|rating-|missing-|correction-)/;
  const DRAFT_MAX_AGE_MS = 14 * 24 * 3600 * 1000; // a draft of an item given up elsewhere goes after this

  // localStorage may be missing or refuse (a private window, a full quota): then no draft is kept.
  function storage() {
    try { return window.localStorage; } catch (error) { return null; }
  }

  function draftKey(itemId) {
    const c = card();
    const annotator = c ? c.dataset.annotatorId : "";
    return annotator && itemId ? DRAFT_PREFIX + annotator + ":" + itemId : null;
  }

  function readDraft(key) {
    const store = storage();
    try {
      const draft = JSON.parse((store && key && store.getItem(key)) || "null");
      return draft && Array.isArray(draft.fields) ? draft : null;
    } catch (error) {
      return null;
    }
  }

  function saveDraft() {
    const f = form(), store = storage(), key = draftKey(shownItem);
    if (!f || !store || !key) return;
    const fields = Array.from(new FormData(f)).filter(([name]) => DRAFT_FIELD.test(name));
    try {
      store.setItem(key, JSON.stringify({ savedAt: Date.now(), spent: secondsSpent(), fields: fields }));
    } catch (error) {
      // Over quota: the page works on, without a draft.
    }
  }

  function dropDraft(itemId) {
    const store = storage(), key = draftKey(itemId);
    if (store && key) store.removeItem(key);
  }

  // Every control the draft covers is set from it: one it does not list was left unticked.
  function restoreDraft() {
    const f = form(), article = document.querySelector("#item-card [data-item-id]");
    if (!f || !article || "posted" in article.dataset) return;
    const draft = readDraft(draftKey(shownItem));
    if (!draft) return;
    const given = name => draft.fields.filter(pair => pair[0] === name).map(pair => String(pair[1]));
    Array.from(f.elements).forEach(control => {
      if (!control.name || !DRAFT_FIELD.test(control.name)) return;
      const values = given(control.name);
      if (control.type === "radio" || control.type === "checkbox") control.checked = values.includes(control.value);
      else if (values.length) control.value = values[0];
    });
    // The time spent before the reload counts too.
    shownAt = Math.min(shownAt, performance.now() - (Number(draft.spent) || 0) * 1000);
    dirty = true;
  }

  function pruneDrafts() {
    const store = storage();
    if (!store) return;
    Object.keys(store).filter(key => key.startsWith(DRAFT_PREFIX)).forEach(key => {
      const draft = readDraft(key);
      if (!draft || !(Date.now() - draft.savedAt < DRAFT_MAX_AGE_MS)) store.removeItem(key);
    });
  }

  function changed() {
    dirty = true;
    saveDraft();
  }

  function edited(event) {
    if (event.target.id === "justification") updateCount();
    if (form() && event.target.form === form()) changed();
  }
  document.addEventListener("input", edited);
  document.addEventListener("change", edited);

  // A plain click on Submit also records the time spent.
  document.addEventListener("submit", function (event) {
    const f = form();
    if (event.target === f) stampTime(f);
  }, true);

  // A form of the card posted the ordinary way (htmx did not take it) leaves the page on purpose.
  document.addEventListener("submit", function (event) {
    const c = card();
    if (!event.defaultPrevented && c && c.contains(event.target)) dirty = false;
  });

  // The server has the last item's answer (saved, skipped, or refused as a repeat): its draft is done with, and
  // the next item starts afresh, on the clock and at its top rather than where the last one was scrolled to.
  function showNextItem(item) {
    dropDraft(shownItem);
    shownItem = item;
    shownAt = performance.now();
    dirty = false;
    card().scrollIntoView({ block: "start" });
  }

  // A submit or skip refused because the item is no longer this annotator's (409) or they are paused (403)
  // answers with a card that says so, which is swapped in like a 422's. Other errors (a 403 page, a 500) are not
  // cards and stay out of the page.
  document.addEventListener("htmx:beforeSwap", function (event) {
    const detail = event.detail;
    const refused = detail.xhr.status === 403 || detail.xhr.status === 409;
    if (refused && detail.target === card() && /^\s*<div id="item-card"/.test(detail.serverResponse)) {
      detail.shouldSwap = true;
      detail.isError = false;
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target !== card()) return; // a swap inside the card (the flag form) leaves the card as it is
    // htmx wires the new card's forms only once it settles, 20 ms on; a key pressed before then would post the
    // form the plain way, leaving the page. Wired now, the second wiring at settle does nothing.
    if (window.htmx) window.htmx.process(card());
    // htmx gives focus back to the element with the same id in the new card (the justification box);
    // a fresh card starts unfocused so that the digit keys pick a strength.
    const active = document.activeElement;
    if (active && active.closest("#item-card")) active.blur();
    // A refused submit shows the same item again: same clock, same draft, same place on the page.
    const item = currentItem();
    if (item !== shownItem) showNextItem(item);
    setUpCard();
  });

  // Leaving with changes the server has not acknowledged asks first: the draft keeps them, but only in this
  // browser and only while the item is still this annotator's.
  window.addEventListener("beforeunload", function (event) {
    if (!dirty) return;
    event.preventDefault();
    event.returnValue = ""; // browsers from before preventDefault() was enough ask for this
  });

  // A page restored from the back/forward cache shows the card as it was left, perhaps an item answered since
  // (in another tab, say). The label view is never cached by HTTP, so a reload shows the current item; the
  // draft brings back any work in progress, so the reload need not ask.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    dirty = false;
    window.location.reload();
  });

  pruneDrafts();
  setUpCard();
})();
