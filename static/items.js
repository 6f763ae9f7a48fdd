// The items list: a "select all on this page" box for the bulk actions. Without JavaScript the box stays hidden and
// each row is ticked by hand.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.querySelector("#select-all");
  if (!all) return;
  const picks = () => [...document.querySelectorAll("#bulk-form input.pick")];
  all.hidden = false;
  all.addEventListener("change", () => picks().forEach((box) => { box.checked = all.checked; }));
  document.querySelector("#bulk-form").addEventListener("change", (event) => {
    if (!event.target.classList.contains("pick")) return;
    const boxes = picks();
    all.checked = boxes.length > 0 && boxes.every((box) => box.checked);
  });
});
