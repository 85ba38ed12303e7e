// Artifact Vault web UI: progressive enhancement only (the pages work without it): a "Copy" button on each snippet.
for (const pre of document.querySelectorAll(".snippet pre")) {
  const code = pre.querySelector("code");
  if (!code || !navigator.clipboard) continue;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent ?? "");
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
  pre.append(button);
}
