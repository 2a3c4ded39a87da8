// The page's small widgets: message bubbles, buttons, the modal form, the toast.

const $ = (id) => document.getElementById(id);

export function message(from, text, at, note, mine) {
  const li = document.createElement("li");
  li.className = mine ? "mine" : "";
  const head = document.createElement("div");
  head.className = "meta";
  const who = document.createElement("strong");
  who.textContent = from;
  const when = document.createElement("time");
  when.textContent = new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  head.append(who, when);
  if (note) {
    const n = document.createElement("span");
    n.className = "expiry";
    n.textContent = note;
    head.append(n);
  }
  const body = document.createElement("p");
  body.textContent = text;
  li.append(head, body);
  return li;
}

export function button(text, onclick, cls = "", id = "") {
  const b = document.createElement("button");
  b.type = "button";
  if (id) b.id = id;
  b.textContent = text;
  b.className = cls;
  b.onclick = onclick;
  return b;
}

// A modal form: resolves with { action, values } (action: the button
// pressed), or null when cancelled.
export function ask(title, fields, actions = [{ value: "ok", label: "OK" }]) {
  return new Promise((resolve) => {
    const dialog = $("dialog");
    const form = $("dialog-form");
    $("dialog-title").textContent = title;
    $("dialog-fields").replaceChildren(
      ...fields.map((f) => {
        const label = document.createElement("label");
        label.textContent = f.label;
        const input = document.createElement("input");
        input.name = f.name;
        input.id = `dialog-${f.name}`;
        input.type = f.type ?? "text";
        input.required = true;
        input.autocomplete = "off";
        label.append(input);
        return label;
      }),
    );
    const menu = $("dialog-menu");
    const cancel = button("Cancel", () => { dialog.close(); resolve(null); });
    menu.replaceChildren(
      cancel,
      ...actions.map((a) => {
        const b = document.createElement("button");
        b.type = "submit";
        b.value = a.value;
        b.id = `dialog-${a.value}`;
        b.className = "primary";
        b.textContent = a.label;
        return b;
      }),
    );
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const values = Object.fromEntries(fields.map((f) => [f.name, form.elements[f.name].value.trim()]));
      dialog.close();
      resolve({ action: ev.submitter?.value ?? actions[0].value, values });
    };
    dialog.showModal();
  });
}

let toastTimer = null;
export function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}
