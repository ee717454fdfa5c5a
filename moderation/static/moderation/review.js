// The review panel, driven by the keyboard (see the shortcut table on /review/).
//
// Rules: a key changes only what it names, and every change it causes shows where it
// happened (the field is outlined, marked "changed" against the guard's label, and the
// status line says what changed). The prompt and the response have their own category
// boxes (a column each); the number keys and typed codes tick the *outlined* column and
// mark that text unsafe; p / r / t move the outline. The status bar (sticky, always on
// screen) also sums up what the form will submit. After a submit the focus goes back
// to the page, never into a text field.
(() => {
  const form = () => document.getElementById("decision-form");
  const panel = () => document.getElementById("review-panel");
  const FIELD_NAMES = { prompt: "prompt", response: "response" };

  const say = (text) => {
    const status = document.getElementById("review-status");
    if (status) status.textContent = text;
  };
  const flash = (element) => {
    if (!element) return;
    element.classList.remove("flash");
    void element.offsetWidth; // restart the animation
    element.classList.add("flash");
    element.addEventListener("animationend", () => element.classList.remove("flash"), { once: true });
  };
  const setOutcome = (value) => {
    const f = form(); if (!f) return;
    f.querySelector("#outcome").value = value;
    f.querySelector("#outcome-label").textContent = value;
  };
  const checked = (group) => form()?.querySelector(`input[name=${group}]:checked`)?.value;
  const fieldset = (field) => form()?.querySelector(`fieldset[data-field=${field}]`);

  const activeField = () => form()?.dataset.activeField || "prompt";
  const setActiveField = (field) => {
    const f = form(); if (!f || !fieldset(field)) return;
    f.dataset.activeField = field;
    const hidden = f.querySelector("#category-field");
    if (hidden) hidden.value = field;
    f.querySelectorAll("fieldset[data-field]").forEach((set) => set.classList.toggle("active-field", set.dataset.field === field));
    const target = f.querySelector("#category-target");
    if (target) target.textContent = FIELD_NAMES[field] || field;
  };
  // The category boxes of one text (each text has its own column).
  const boxesOf = (field) => [...(form()?.querySelectorAll(`input[name=${field}_categories]`) || [])];
  const codesOf = (field) => boxesOf(field).filter((b) => b.checked).map((b) => b.value);

  // What the form will submit, always on show in the status bar.
  const summarize = () => {
    const f = form(); const out = document.getElementById("review-summary");
    if (!f || !out) return;
    const parts = [`Decision: ${f.querySelector("#outcome").value}`];
    for (const field of ["prompt", "response"]) {
      const label = checked(`${field}_label`);
      if (!label) continue;
      const codes = codesOf(field);
      parts.push(`${field} ${label}${codes.length ? ` (${codes.join(", ")})` : ""}`);
    }
    const refusal = checked("refusal_label");
    if (refusal) parts.push(refusal);
    out.textContent = parts.join(" · ");
  };

  // Mark every label and category that differs from the guard's verdict.
  const markChanges = () => {
    const f = form(); if (!f) return;
    f.querySelectorAll("fieldset[data-guard]").forEach((set) => {
      const now = set.querySelector("input[type=radio]:checked")?.value;
      const changed = now !== set.dataset.guard;
      set.classList.toggle("changed", changed);
      const note = set.querySelector(".was");
      if (note) note.textContent = changed ? `changed, guard said ${set.dataset.guard}` : "";
    });
    f.querySelectorAll("label.category-choice").forEach((label) => {
      const box = label.querySelector("input");
      const guard = label.dataset.guard === "1";
      label.classList.toggle("added", box.checked && !guard);
      label.classList.toggle("removed", !box.checked && guard);
    });
    summarize();
  };

  const setRadio = (group, value) => {
    const radio = form()?.querySelector(`input[name=${group}][value=${value}]`);
    if (radio && !radio.checked) { radio.checked = true; return true; }
    return false;
  };

  // A text marked safe keeps no categories: its own go (the other text's stay), and the status line says which.
  const clearCategoriesIfSafe = (field, messages) => {
    if (checked(`${field}_label`) !== "safe") return;
    const boxes = boxesOf(field).filter((b) => b.checked);
    if (!boxes.length) return;
    boxes.forEach((box) => { box.checked = false; });
    messages.push(`categories ${boxes.map((b) => b.value).join(", ")} cleared (the ${field} is safe now)`);
    flash(form().querySelector("#category-choices"));
  };

  const toggleField = (field, group) => {
    const f = form(); if (!f) return;
    const radios = [...f.querySelectorAll(`input[type=radio][name=${group}]`)];
    if (!radios.length) return;
    const index = radios.findIndex((r) => r.checked);
    const next = radios[(index + 1) % radios.length];
    next.checked = true;
    const messages = [`${field} → ${next.value}`];
    if (FIELD_NAMES[field]) {
      setActiveField(field);
      clearCategoriesIfSafe(field, messages);
    }
    flash(next.closest("fieldset"));
    afterChange(messages);
  };

  const fieldOf = (box) => box.closest("label")?.dataset.field || activeField();
  const toggleCategory = (box) => {
    box.checked = !box.checked;
    categoryChanged(box, [`${box.value} ${box.checked ? "chosen" : "removed"} for the ${fieldOf(box)}`]);
  };
  const categoryChanged = (box, messages) => {
    const field = fieldOf(box);
    if (field !== activeField()) setActiveField(field);
    if (box.checked && setRadio(`${field}_label`, "unsafe")) {
      messages.push(`${field} → unsafe (a category was chosen for it)`);
      flash(fieldset(field));
    }
    flash(box.closest("label"));
    afterChange(messages);
  };

  // Codes typed after "c" tick the outlined text's boxes; a code the policy lacks stays in the field, named.
  const applyTypedCodes = () => {
    const f = form(); const input = f?.querySelector("#category-codes");
    if (!input || !input.value.trim()) return true;
    const field = activeField();
    const boxes = new Map(boxesOf(field).map((b) => [b.value.toLowerCase(), b]));
    const chosen = []; const unknown = [];
    for (const code of input.value.split(/[,\s]+/).filter(Boolean)) {
      const box = boxes.get(code.toLowerCase());
      if (!box) { unknown.push(code); continue; }
      if (!box.checked) { box.checked = true; flash(box.closest("label")); }
      chosen.push(box.value);
    }
    input.value = unknown.join(", ");
    const messages = [];
    if (chosen.length) {
      messages.push(`${chosen.join(", ")} chosen for the ${field}`);
      if (setRadio(`${field}_label`, "unsafe")) { messages.push(`${field} → unsafe (a category was chosen for it)`); flash(fieldset(field)); }
    }
    if (unknown.length) messages.push(`${unknown.join(", ")}: not a code of this policy`);
    afterChange(messages);
    return !unknown.length;
  };

  const afterChange = (messages) => {
    setOutcome("override");
    markChanges();
    say(messages.join("; "));
  };

  const submit = (outcome) => {
    const f = form(); if (!f) return;
    if (!applyTypedCodes()) return; // the status line names the code the policy lacks
    // A focused text field would be focused again in the next item (htmx keeps focus by id).
    if (f.contains(document.activeElement)) document.activeElement.blur();
    setOutcome(outcome);
    f.querySelector(outcome === "override" ? "#override-button" : "#agree-button").click();
  };

  // Mouse changes follow the same rules as the keys.
  document.addEventListener("change", (event) => {
    const f = form();
    if (!f || !f.contains(event.target)) return;
    const target = event.target;
    if (/_categories$/.test(target.name)) {
      categoryChanged(target, [`${target.value} ${target.checked ? "chosen" : "removed"} for the ${fieldOf(target)}`]);
    } else if (target.type === "radio") {
      const field = target.closest("fieldset")?.dataset.field;
      const messages = [`${field} → ${target.value}`];
      if (FIELD_NAMES[field]) { setActiveField(field); clearCategoriesIfSafe(field, messages); }
      afterChange(messages);
    } else if (target.id === "category-codes") {
      applyTypedCodes();
    }
  });
  document.addEventListener("input", (event) => {
    if (event.target.id === "category-codes" && event.target.value.trim()) { setOutcome("override"); summarize(); }
  });

  // Keys pressed while the panel is being replaced wait for the new panel. Until htmx has settled the new
  // content its form is not wired: a key that submits it would post the page the plain way (a full reload
  // that loses the focus), and a key meant for the next item would act on the old one.
  let replacing = false;
  const queued = [];
  const targetsPanel = (event) => event.detail?.target?.id === "review-panel";
  document.addEventListener("htmx:beforeRequest", (event) => { if (targetsPanel(event)) replacing = true; });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (targetsPanel(event) && !event.detail.successful) { replacing = false; queued.length = 0; }
  });
  const replayQueued = () => {
    // One at a time: a replayed key that replaces the panel again leaves the rest for the next panel; one that
    // opens a text field ("n", "c") ends the replay, since the keys after it were text, not shortcuts.
    while (queued.length && !replacing) {
      document.dispatchEvent(new KeyboardEvent("keydown", { key: queued.shift(), bubbles: true }));
      if (document.activeElement?.matches?.("input, textarea, select")) queued.length = 0;
    }
  };

  // After every swap of the panel: the focus is on the page, shortcuts work at once.
  document.addEventListener("htmx:afterSettle", (event) => {
    const p = panel();
    if (!p || !(event.target === p || event.target.contains?.(p) || p.contains(event.target))) return;
    replacing = false;
    init();
    const active = document.activeElement;
    // A field of the new panel that has the focus was focused after the swap (the swap replaced the old ones):
    // the reviewer is typing there (a note begun right after "n"), so the settle must not take the keys away.
    const typing = active && document.contains(active) && p.contains(active) && active.matches?.("input, textarea, select");
    if (!typing && (!active || active === document.body || !document.contains(active) || p.contains(active))) {
      p.focus({ preventScroll: true });
    }
    replayQueued();
  });

  const init = () => {
    const f = form(); if (!f) return;
    setActiveField(activeField());
    markChanges();
  };
  document.addEventListener("DOMContentLoaded", init);
  if (document.readyState !== "loading") init();

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.isComposing) return;
    const f = form();
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      if (f) { event.preventDefault(); submit(f.querySelector("#outcome").value); }
      return;
    }
    if (event.ctrlKey || event.metaKey) return;
    const target = event.target;
    if (target.matches && target.matches("textarea, input[type=text], input[type=search], input[type=date], input[type=number], select")) {
      if (target.id === "category-codes" && event.key === "Enter") {
        event.preventDefault(); // ticks the codes; it does not submit
        if (applyTypedCodes()) { target.blur(); panel()?.focus({ preventScroll: true }); }
        return;
      }
      if (event.key === "Escape") { target.blur(); panel()?.focus({ preventScroll: true }); }
      return;
    }
    if (replacing) { event.preventDefault(); queued.push(event.key); return; }
    if (!f) {
      if (event.key === "j") { const claim = document.getElementById("claim-next"); if (claim && !claim.disabled) { event.preventDefault(); claim.click(); } }
      return;
    }
    let handled = true;
    switch (event.key) {
      case "a": submit("agree"); break;
      case "o": submit("override"); break;
      case "Enter": submit(f.querySelector("#outcome").value); break;
      case "p": toggleField("prompt", "prompt_label"); break;
      case "r": toggleField("response", "response_label"); break;
      case "f": toggleField("refusal", "refusal_label"); break;
      case "t": {
        const other = activeField() === "prompt" ? "response" : "prompt";
        if (fieldset(other)) { setActiveField(other); flash(fieldset(other)); say(`category keys now mark the ${other}`); }
        break;
      }
      case "c": f.querySelector("#category-codes").focus({ preventScroll: true }); say(`type codes for the ${activeField()}, then Enter`); break;
      case "n": f.querySelector("#note").focus({ preventScroll: true }); break;
      case "u": f.querySelector("#release-button").click(); break;
      default:
        if (/^[1-9]$/.test(event.key)) {
          const box = f.querySelector(`#${activeField()}-cat-${event.key}`);
          if (box) toggleCategory(box);
        } else handled = false;
    }
    if (handled) event.preventDefault();
  });
})();
