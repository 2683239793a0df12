// Copy buttons: copy the named field's value to the clipboard and say so.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(field.value);
    status.textContent = "Copied";
  } catch (err) {
    field.select();
    status.textContent = "Press Ctrl+C (⌘C) to copy";
  }
});
