// "Select all" for the dead letters on this page: the only script the dashboard has.
document.addEventListener("change", (event) => {
  const box = event.target;
  const name = box.dataset && box.dataset.selectAll;
  if (!name) return;
  for (const each of box.form.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
    each.checked = box.checked;
  }
});
