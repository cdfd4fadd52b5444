// The failure toast: one title, one line per part that failed.

const toast = document.querySelector('[data-testid="toast"]');
const lines = toast.querySelector(".toast-lines");

toast.querySelector(".toast-close").addEventListener("click", hideToast);

/** Shows the toast with `messages`, one line each. */
export function showToast(messages) {
  lines.replaceChildren(
    ...messages.map((m) => {
      const li = document.createElement("li");
      li.textContent = m;
      return li;
    }),
  );
  toast.hidden = false;
}

export function hideToast() {
  toast.hidden = true;
  lines.replaceChildren();
}
