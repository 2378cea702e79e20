// Small DOM helpers shared by the views: messages, the progress bar under the search box, and a
// pause that lets the page draw.

export const $ = (selector) => document.querySelector(selector);

export function errorText(err) {
  if (err instanceof Error) return err.message;
  return String(err);
}

// Every error reaches the page as text, and the page stays usable. Info messages go away by
// themselves; errors stay until dismissed.
export function message(text, kind = 'error') {
  const box = document.createElement('div');
  box.className = `message ${kind}`;
  box.textContent = text;
  const close = document.createElement('button');
  close.textContent = '×';
  close.title = 'dismiss';
  close.onclick = () => box.remove();
  box.append(close);
  $('#messages').append(box);
  if (kind !== 'error') setTimeout(() => box.remove(), 8000);
  return box;
}

// A progress bar under the search box while big files download.
export function progressBar(label, total) {
  const bar = $('#load-progress');
  let done = 0;
  bar.hidden = false;
  bar.max = Math.max(1, total);
  bar.value = 0;
  const status = $('#search-status');
  const mb = (b) => (b / 2 ** 20).toFixed(1);
  return {
    add(bytes) {
      done += bytes;
      bar.value = Math.min(done, bar.max);
      status.textContent = `${label}: ${mb(done)} of ${mb(total)} MB…`;
    },
    close() {
      bar.hidden = true;
    },
  };
}

// Lets the browser draw (and handle input) between two pieces of long work.
export const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));
