// Copy buttons: <button data-copy-target="element-id">
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copyTarget);
  navigator.clipboard.writeText(field.value).then(() => {
    button.textContent = "Copied";
  });
});
