// Shared by the admin console and the account page: the API client, the
// session (the bearer token lives in sessionStorage, never in a URL), the
// message regions, the sign-in flow (password, then MFA setup or
// challenge) and the enrollment widgets.

const SESSION_KEY = "mfa-admin.session";

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** Create an element: h("p", {class: "hint"}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ---- messages

/** Say something went well (polite live region). */
export function say(text) {
  $("#alert").textContent = "";
  $("#status").textContent = text;
}

/** Show an error in words (assertive live region). */
export function fail(error) {
  $("#status").textContent = "";
  $("#alert").textContent = describeError(error);
}

export function clearMessages() {
  $("#status").textContent = "";
  $("#alert").textContent = "";
}

// A new submit clears the previous message, also one the browser's own
// validation stops before the form's handler runs.
document.addEventListener("submit", clearMessages, true);
document.addEventListener("invalid", clearMessages, true);

// ---- the API

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  // An email address (or any word with an "@") keeps its case.
  const first = t.split(/\s/, 1)[0];
  const s = first.includes("@") ? t : t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : s + ".";
}

/** The JSON fields the server's messages name, in the forms' words. */
const FIELD_LABELS = {
  firstName: "first name",
  lastName: "last name",
  currentPassword: "the current password",
  mfaGracePeriodHours: "the grace period in hours",
};

function withLabels(message) {
  return String(message || "").replace(/\b(firstName|lastName|currentPassword|mfaGracePeriodHours)\b/g, (f) => FIELD_LABELS[f]);
}

/**
 * `lead.` alone when the server's message says no more than the lead does
 * (matches `same`), else `lead: message.`; never the same words twice.
 */
function withLead(lead, message, same) {
  const m = String(message || "").trim();
  if (!m || same.test(m)) return lead + ".";
  return `${lead}: ${sentence(m)}`;
}

/** An error as a sentence for people. */
export function describeError(error) {
  if (!(error instanceof ApiError)) {
    return sentence(error && error.message) || "Something went wrong.";
  }
  const message = withLabels(error.message);
  switch (error.code) {
    case "network":
      return "The server could not be reached. Check the connection and try again.";
    case "too_many_attempts": {
      const secs = Number(error.retryAfter);
      const inSecs = `in ${secs} second${secs === 1 ? "" : "s"}`;
      // One mail of a kind per half minute: not a lockout, nothing failed.
      if (/^a message was sent a moment ago/i.test(error.message || "")) {
        return secs > 0
          ? `A message was sent a moment ago. Another can be sent ${inSecs}.`
          : "A message was sent a moment ago. Another can be sent shortly.";
      }
      return "Too many attempts." + (secs > 0 ? ` Try again ${inSecs}.` : " Try again later.");
    }
    case "unauthorized":
      return "Your session has ended. Sign in again.";
    case "mfa_required":
      // The server's own words name the API route to call: the page asks
      // for the code itself.
      return withLead(
        "Finish multi-factor authentication first",
        message,
        /^(finish |multi-factor authentication must|a second factor must be verified)/i,
      );
    case "forbidden":
      return withLead("You are not allowed to do this", message, /^(you are )?not allowed/i);
    default:
      return sentence(message) || `The server answered with status ${error.status}.`;
  }
}

/** Call the JSON API. Resolves to the parsed body (null when empty). */
export async function api(method, path, { token, body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "the server could not be reached");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const code = (data && data.error) || "http_" + res.status;
    const message = (data && data.message) || `the server answered with status ${res.status}`;
    throw new ApiError(res.status, code, message, res.headers.get("Retry-After"));
  }
  return data;
}

// ---- the session

export const session = {
  get() {
    try {
      const s = JSON.parse(sessionStorage.getItem(SESSION_KEY));
      return s && typeof s.token === "string" ? s : null;
    } catch {
      return null;
    }
  },
  set(value) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
  },
};

let onSessionEnded = () => {};
/**
 * Resolves true once the session verified a factor, false if cancelled,
 * or the ApiError of a session that ended meanwhile.
 */
let onMfaRequired = async () => false;

/**
 * Call the API with the stored full session; a 401 ends the session, and a
 * 403 mfa_required (a change of factors, email or password from a session
 * that verified none) asks for a code on it and, once it is verified,
 * makes the same call again with the new token: the action is carried out.
 */
export async function call(method, path, body) {
  const s = session.get();
  try {
    return await api(method, path, { token: s && s.token, body });
  } catch (error) {
    if (error instanceof ApiError && error.code === "unauthorized") {
      session.clear();
      onSessionEnded(error);
    }
    if (error instanceof ApiError && error.code === "mfa_required" && s) {
      const verified = await onMfaRequired(s);
      if (verified === true) return call(method, path, body);
      if (verified instanceof ApiError) throw verified;
      // Cancelled (or left): one plain sentence, no lead.
      throw new ApiError(403, "mfa_cancelled", "nothing was changed");
    }
    throw error;
  }
}

/** Disable a button while `work` runs; show its error in words. */
/**
 * A one-time code as typed: authenticator apps show "123 456", and a code
 * pasted may carry spaces; the server takes the digits alone (an audit's
 * code with a space was refused and counted as a wrong one).
 */
export function typedCode(input) {
  return input.value.replace(/\s+/g, "");
}

export async function busy(button, work) {
  // A button disabled while focused drops the keyboard focus to the page;
  // it is given back when the work is done, unless it has moved on.
  const hadFocus = button && document.activeElement === button;
  if (button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  try {
    return await work();
  } catch (error) {
    fail(error);
    return undefined;
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      if (hadFocus && (document.activeElement === document.body || !document.activeElement)) {
        button.focus();
      }
    }
  }
}

// The skip link moves the keyboard focus into the view on screen. As a
// plain link to "#main" it changed the address, which the pages' routers
// took for navigation: it left the view, or cancelled a step-up.
for (const link of document.querySelectorAll(".skip-link")) {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("main")?.focus();
  });
}

// Each view names the page in the title bar and in a screen reader's
// list of tabs: the view's heading, then the site's name ("MFA Admin").
const siteName = document.title.split(" · ").pop();

// ---- formatting

const pad = (n) => String(n).padStart(2, "0");

/** `2027-01-15 08:00 UTC` (with `seconds`, `08:00:30`) for an RFC 3339 time. */
export function formatTime(iso, { seconds = false } = {}) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}` + (seconds ? `:${pad(d.getUTCSeconds())}` : "");
  return `${date} ${time} UTC`;
}

/** The secret in groups of four, for typing it into an app. */
export function groupSecret(secret) {
  return (String(secret).match(/.{1,4}/g) || []).join(" ");
}

/** Our own SVG as a data: URI for an <img> (never inserted as markup). */
export function svgDataUri(svg) {
  const bytes = new TextEncoder().encode(svg);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return "data:image/svg+xml;base64," + btoa(binary);
}

export const METHOD_NAMES = {
  AUTHENTICATOR: "Authenticator app",
  EMAIL: "Email",
  RECOVERY: "Recovery code",
};

/** Offer `text` as a file download. */
export function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Copy text to the clipboard, saying whether it worked. */
export async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    say(`${what} copied to the clipboard.`);
  } catch {
    fail(new Error(`The browser did not allow copying; select the ${what.toLowerCase()} and copy them by hand`));
  }
}

/** Show one of `ids`, hide the others; focus its heading. */
export function showView(ids, id, { focus = true } = {}) {
  for (const other of ids) $("#" + other).hidden = other !== id;
  $("#loading").hidden = true;
  const heading = $(`#${id} h1`);
  const name = heading && heading.textContent.trim();
  document.title = name ? `${name} · ${siteName}` : siteName;
  if (focus && heading) heading.focus();
}

// ---- enrollment widgets

let widgetCount = 0;

/**
 * Authenticator enrollment: generateTempSecret, the QR code and the key in
 * groups of four, then validateCode. `token()` is the session to use (or
 * `request(method, path, body)`, how to call the API with it);
 * `onDone(answer)` gets validateCode's body (a new token on a partial
 * session, null on a full one).
 */
export function mountAuthenticatorEnrollment(container, { token, request, onDone, onCancel }) {
  const id = `auth${++widgetCount}`;
  const send = request || ((method, path, body) => api(method, path, { token: token(), body }));
  container.replaceChildren();
  const box = h("div", { class: "enroll", id });
  container.append(box);

  async function start(button) {
    clearMessages();
    const secret = await busy(button, () =>
      send("POST", "/user/users/mfa/generateTempSecret"),
    );
    if (secret) render(secret);
  }

  function render(secret) {
    const codeInput = h("input", {
      id: `${id}-code`,
      class: "code",
      type: "text",
      inputmode: "numeric",
      autocomplete: "one-time-code",
      pattern: "[0-9 ]{6,9}",
      maxlength: "9",
      required: true,
      "aria-describedby": `${id}-code-hint`,
    });
    const form = h(
      "form",
      { method: "post", action: "#", class: "enroll-form" },
      h("label", { for: `${id}-code` }, "Code from the app"),
      codeInput,
      h("p", { id: `${id}-code-hint`, class: "hint" }, "The 6 digits the app shows for this account."),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", class: "primary" }, "Verify"),
        h("button", { type: "button", onclick: (e) => start(e.currentTarget) }, "Get a new key"),
        onCancel ? h("button", { type: "button", class: "link", onclick: onCancel }, "Cancel") : null,
      ),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearMessages();
      const button = form.querySelector("button[type=submit]");
      const code = typedCode(codeInput);
      await busy(button, async () => {
        const answer = await send("POST", "/user/users/mfa/validateCode", { code }).catch((error) => {
          // A key replaced since it was scanned (another tab, a reload,
          // "Get a new key") is the usual cause: say so.
          if (error instanceof ApiError && error.code === "invalid_code") {
            throw new Error(
              "The code is not valid. If you scanned a key before a reload, in another tab, or before \"Get a new key\", that key was replaced: scan the one shown here.",
            );
          }
          throw error;
        });
        codeInput.value = "";
        await onDone(answer);
      });
    });
    box.replaceChildren(
      h("h3", {}, "Authenticator app"),
      h("p", {}, "1. Scan this QR code with your authenticator app."),
      h("img", {
        class: "qr",
        id: `${id}-qr`,
        src: svgDataUri(secret.qrCodeSvg),
        alt: "QR code for the authenticator app; the same key is written out below",
        width: "192",
        height: "192",
      }),
      h(
        "p",
        {},
        "Or enter this key by hand (in groups of four characters): ",
        h("code", { class: "secret", id: `${id}-secret` }, groupSecret(secret.secret)),
      ),
      h(
        "p",
        { class: "hint" },
        `The key has only the letters A to Z and the digits 2 to 7. It is valid until ${formatTime(secret.expiresAt)}.`,
      ),
      // For a user who cannot scan (a screen reader, the app on this very
      // phone): the key to paste, and the link authenticator apps open.
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => copy(secret.secret, "Key") }, "Copy key"),
        h("a", { href: secret.otpauthUri, id: `${id}-otpauth` }, "Open in an authenticator app on this device"),
      ),
      h("p", {}, "2. Enter the code the app shows."),
      form,
    );
    codeInput.focus();
  }

  return { start };
}

/**
 * Email enrollment: enrollEmail sends a code, verifyEmail confirms it.
 * `onDone(answer)` gets verifyEmail's body; `request` as for the
 * authenticator.
 */
export function mountEmailEnrollment(container, { token, request, onDone }) {
  const id = `email${++widgetCount}`;
  const send = request || ((method, path, body) => api(method, path, { token: token(), body }));
  const sendButton = h("button", { type: "button", id: `${id}-send` }, "Email me a code");
  const sent = h("p", { class: "hint", id: `${id}-sent`, role: "status" });
  const codeInput = h("input", {
    id: `${id}-code`,
    class: "code",
    type: "text",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9 ]{6,7}",
    maxlength: "7",
    required: true,
  });
  const form = h(
    "form",
    { method: "post", action: "#", hidden: true },
    h("label", { for: `${id}-code` }, "Code from the email"),
    codeInput,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Verify email")),
  );
  sendButton.addEventListener("click", async () => {
    clearMessages();
    const answer = await busy(sendButton, () =>
      send("PUT", "/oauth/users/mfa/enrollEmail?mfatype=EMAIL"),
    );
    if (answer) {
      sent.textContent = `A code was sent to ${answer.sentTo}; it is valid until ${formatTime(answer.expiresAt)}.`;
      sendButton.textContent = "Send a new code";
      form.hidden = false;
      codeInput.focus();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const button = form.querySelector("button[type=submit]");
    await busy(button, async () => {
      const answer = await send("PUT", "/oauth/users/mfa/verifyEmail", {
        mfatype: "EMAIL",
        totp: typedCode(codeInput),
      });
      codeInput.value = "";
      await onDone(answer);
    });
  });
  container.replaceChildren(h("div", { class: "enroll", id }, h("h3", {}, "Email codes"), sendButton, sent, form));
}

// ---- sign-in

/** The login's 403 in words: why this account cannot open a session here. */
function loginRefusal(org) {
  return new Error(
    org
      ? `You cannot sign in to org ${org}: your account is not a member of that org, or its membership there is not active. Leave the Org ID empty to sign in to your first org`
      : "You cannot sign in: your account is not an active member of any org. Ask an admin of your org to enable your access",
  );
}

/**
 * Wire the sign-in view. `onSignedIn()` runs once a full session is stored.
 * Returns `show(message?)`, which shows the password step, and
 * `stepUp(full)`, the challenge on a full session that verified no factor.
 */
export function setupSignIn({ views, onSignedIn }) {
  const passwordForm = $("#password-form");
  const challengeView = $("#challenge-view");
  const challengeForm = $("#challenge-form");
  const setupView = $("#setup-view");
  let partial = null; // {token, orgId}: the pre-MFA session, in memory only
  // While a full session verifies a factor: {full, promise, resolve}.
  let stepping = null;

  function step(which) {
    passwordForm.hidden = which !== "password";
    challengeView.hidden = which !== "challenge";
    setupView.hidden = which !== "setup";
    $("#signin-more").hidden = which !== "password";
  }

  /** Forget the sign-in in progress: codes, the setup key, the challenge. */
  function forget() {
    partial = null;
    $("#signin-password").value = "";
    $("#challenge-code").value = "";
    $("#challenge-sent").textContent = "";
    $("#challenge-methods").replaceChildren(h("legend", {}, "Verify with"));
    $("#setup-authenticator").replaceChildren();
    $("#setup-email").replaceChildren();
  }

  /**
   * The challenge's words: a sign-in's, or a step-up's in the middle of
   * an action (where "your password was right" and "Start over" would
   * read as a sign-in the user never began).
   */
  function challengeWording(stepUp) {
    $("#signin-title").textContent = stepUp ? "Confirm it is you" : "Sign in";
    $("#challenge-title").textContent = stepUp ? "Verify a second factor" : "Multi-factor authentication";
    $("#challenge-intro").textContent = stepUp
      ? "What you asked for changes sign-in or account settings, and this session has not verified a second factor yet."
      : "Your password was right. Confirm it is you with a second factor.";
    const restart = stepUp ? "Cancel" : "Start over";
    for (const button of document.querySelectorAll("[data-action=restart-signin]")) button.textContent = restart;
  }

  /**
   * Leave a step-up: `verified` is true when the session verified a
   * factor, false when cancelled, or the ApiError of a session that ended.
   */
  function endStepUp(verified) {
    const s = stepping;
    stepping = null;
    challengeWording(false);
    if (s) s.resolve(verified);
  }

  /**
   * A 401 while a full session steps up: the session ended. Forget it as
   * `call()` does, and let the waiting action fail with the same words.
   */
  function stepUpEnded(error) {
    if (!(stepping && error instanceof ApiError && error.code === "unauthorized")) return false;
    session.clear();
    endStepUp(error);
    onSessionEnded(error);
    return true;
  }

  // Leaving the challenge of a step-up by navigating (the nav, the URL,
  // Back) cancels it as "Cancel" does: the action is not done and its
  // button is free again.
  window.addEventListener("hashchange", () => {
    if (!stepping) return;
    forget();
    endStepUp(false);
  });

  function show(message) {
    if (stepping) endStepUp(false);
    forget();
    showView(views, "signin-view", { focus: false });
    step("password");
    if (message) fail(message);
    $("#signin-email").focus();
  }

  /** Empty the sign-in form too: the next person in this tab starts afresh. */
  function reset() {
    $("#signin-email").value = "";
    $("#signin-org").value = "";
    forget();
  }

  async function complete(token, orgId, extra = {}) {
    session.set({ ...extra, token, orgId });
    forget();
    clearMessages();
    if (stepping) {
      // The action that asked for the factor goes on by itself.
      await onSignedIn();
      endStepUp(true);
      return;
    }
    await onSignedIn();
  }

  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const body = { email: $("#signin-email").value.trim(), password: $("#signin-password").value };
    const org = $("#signin-org").value.trim();
    if (org) body.orgId = Number(org);
    const button = passwordForm.querySelector("button[type=submit]");
    await busy(button, async () => {
      let login;
      try {
        login = await api("POST", "/user/auth/login", { body });
      } catch (error) {
        if (error instanceof ApiError && error.code === "forbidden") throw loginRefusal(org);
        throw error;
      } finally {
        // Right or wrong, the password does not stay on the page.
        $("#signin-password").value = "";
      }
      if (login.mfa === "none") {
        await complete(login.token, login.orgId, { setupDueAt: login.setupDueAt || null });
      } else if (login.mfa === "challenge_required") {
        partial = { token: login.token, orgId: login.orgId };
        showChallenge(login.methods);
      } else {
        partial = { token: login.token, orgId: login.orgId };
        showSetup(login.methods);
      }
    });
  });

  // The challenge: one of the user's verified methods.
  function showChallenge(methods) {
    const fieldset = $("#challenge-methods");
    fieldset.replaceChildren(h("legend", {}, "Verify with"));
    methods.forEach((method, i) => {
      const id = "challenge-method-" + method.toLowerCase();
      const radio = h("input", { type: "radio", name: "method", id, value: method, checked: i === 0 });
      radio.addEventListener("change", () => methodChosen(method));
      fieldset.append(h("label", { class: "radio", for: id }, radio, METHOD_NAMES[method] || method));
    });
    $("#challenge-sent").textContent = "";
    step("challenge");
    methodChosen(methods[0]);
    $("#challenge-title").focus();
  }

  function methodChosen(method) {
    const input = $("#challenge-code");
    $("#challenge-email").hidden = method !== "EMAIL";
    $("#challenge-code-label").textContent =
      method === "RECOVERY" ? "Recovery code" : method === "EMAIL" ? "Code from the email" : "Code from your authenticator app";
    input.value = "";
    if (method === "RECOVERY") {
      input.setAttribute("inputmode", "text");
      input.setAttribute("autocomplete", "off");
    } else {
      input.setAttribute("inputmode", "numeric");
      input.setAttribute("autocomplete", "one-time-code");
    }
  }

  $("#challenge-send").addEventListener("click", async (event) => {
    clearMessages();
    const button = event.currentTarget;
    const answer = await busy(button, async () => {
      try {
        return await api("POST", "/user/auth/mfa/challenge", { token: partial && partial.token, body: { method: "EMAIL" } });
      } catch (error) {
        stepUpEnded(error);
        throw error;
      }
    });
    if (answer) {
      $("#challenge-sent").textContent = `A code was sent to ${answer.sentTo}; it is valid until ${formatTime(answer.expiresAt)}.`;
      $("#challenge-code").focus();
    }
  });

  challengeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const chosen = $("input[name=method]:checked", challengeForm);
    const method = chosen ? chosen.value : "AUTHENTICATOR";
    const code = method === "RECOVERY" ? $("#challenge-code").value.trim() : typedCode($("#challenge-code"));
    const button = challengeForm.querySelector("button[type=submit]");
    await busy(button, async () => {
      let answer;
      try {
        answer = await api("POST", "/user/auth/mfa/verify", {
          token: partial && partial.token,
          body: { method, code },
        });
      } catch (error) {
        stepUpEnded(error);
        throw error;
      }
      const extra = stepping ? { ...stepping.full } : {};
      await complete(answer.token, partial.orgId, extra);
    });
  });

  // Setup: the user has no factor yet and the org wants one.
  function showSetup(methods) {
    const token = () => partial && partial.token;
    const done = async (answer) => {
      if (answer && answer.token) await complete(answer.token, partial.orgId);
    };
    $("#setup-authenticator").replaceChildren();
    $("#setup-email").replaceChildren();
    if (methods.includes("AUTHENTICATOR")) {
      const widget = mountAuthenticatorEnrollment($("#setup-authenticator"), { token, onDone: done });
      widget.start(null);
    }
    if (methods.includes("EMAIL")) {
      const details = h("details", {}, h("summary", {}, "Use email codes instead"));
      $("#setup-email").append(details);
      const inner = h("div");
      details.append(inner);
      mountEmailEnrollment(inner, { token, onDone: done });
    }
    step("setup");
    $("#setup-title").focus();
  }

  for (const button of document.querySelectorAll("[data-action=restart-signin]")) {
    button.addEventListener("click", async () => {
      clearMessages();
      if (stepping && session.get()) {
        // "Cancel" of a step-up: back to the page, the action not done.
        forget();
        await onSignedIn();
        endStepUp(false);
        return;
      }
      // "Start over" abandons the password step's session: end it on the
      // server too, or it could still enroll a factor for ten minutes.
      const abandoned = partial && partial.token;
      show();
      if (abandoned) api("POST", "/user/auth/logout", { token: abandoned }).catch(() => {});
    });
  }

  // A full session opened where no MFA was owed verifies a code before it
  // changes the factors, the email or the password of a user who has a
  // factor: the challenge, on that session, which then gets a new token.
  // Resolves true once verified (the caller then makes its call again),
  // false when cancelled or left, or the ApiError that stopped it (a
  // session that ended: the page is signed out).
  async function stepUp(full) {
    if (stepping) {
      // A second action while the challenge is on screen waits for it; a
      // challenge no longer shown is cancelled and asked anew.
      if (!$("#signin-view").hidden && !challengeView.hidden) return stepping.promise;
      forget();
      endStepUp(false);
    }
    let details;
    try {
      details = await api("GET", "/oauth/users/mfaDetails", { token: full.token });
    } catch (error) {
      if (error instanceof ApiError && error.code === "unauthorized") {
        session.clear();
        onSessionEnded(error);
      }
      // The waiting action fails with these words, not "nothing was changed".
      return error;
    }
    const verified = (m) => details.details && details.details[m] && details.details[m].verified;
    const methods = ["AUTHENTICATOR", "EMAIL"].filter(verified).concat(["RECOVERY"]);
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    stepping = { full, promise, resolve };
    partial = { token: full.token, orgId: full.orgId };
    showView(views, "signin-view", { focus: false });
    showChallenge(methods);
    challengeWording(true);
    say("This session was opened without a second factor. Verify one to go on: what you asked for is done right after.");
    return promise;
  }

  return { show, stepUp, reset };
}

/**
 * Start a page: with a stored session, `onSignedIn()`; otherwise the
 * sign-in view. Wires "Sign out" and the end of a session: both forget
 * the token and, through `onSignedOut()`, the page's data, whatever the
 * server answers.
 */
export function boot({ views, onSignedIn, onSignedOut }) {
  const signIn = setupSignIn({ views, onSignedIn });
  onMfaRequired = (full) => signIn.stepUp(full);
  onSessionEnded = () => {
    onSignedOut();
    signIn.show(new ApiError(401, "unauthorized", "session ended"));
  };
  $("#sign-out").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    const s = session.get();
    // Forget everything in this tab first, whatever the server answers.
    session.clear();
    onSignedOut();
    signIn.reset();
    signIn.show();
    let revoked = true;
    if (s) {
      button.disabled = true;
      try {
        await api("POST", "/user/auth/logout", { token: s.token });
      } catch (error) {
        revoked = error instanceof ApiError && error.code === "unauthorized";
      } finally {
        button.disabled = false;
      }
    }
    if (revoked) say("You are signed out.");
    else {
      fail(
        new Error(
          "You are signed out in this tab, but the server could not be told: the session stays valid on the server until it expires",
        ),
      );
    }
  });
  if (session.get()) {
    onSignedIn().catch((error) => {
      if (!(error instanceof ApiError && error.code === "unauthorized")) fail(error);
    });
  } else {
    signIn.show();
  }
  return signIn;
}
