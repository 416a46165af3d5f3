// The admin console: User Management, Create User, Edit User, Org
// settings, Audit trail.
// Every action is a call to the JSON API (spec/API.md) with the session of
// the signed-in admin; the current org is the org of that session.

import {
  $,
  $$,
  ApiError,
  METHOD_NAMES,
  boot,
  busy,
  call,
  clearMessages,
  download,
  fail,
  formatTime,
  h,
  say,
  session,
  showView,
} from "./common.js";

const VIEWS = ["signin-view", "forbidden-view", "users-view", "create-view", "edit-view", "org-view", "audit-view"];
const PAGE_SIZE = 20;
const AUDIT_PAGE_SIZE = 25;

let org = null;
let me = null; // the signed-in admin
const users = { search: "", page: 0, seq: 0, timer: 0 };
// Pages after the first are asked for by cursor (`beforeId`: the last id
// of the page before), so events written meanwhile do not repeat rows.
const audit = { page: 0, cursors: [], lastId: null, total: 0, userText: "", action: "", from: "", to: "", client: "", seq: 0 };
let editing = null; // {user, membership, pendingEmail}
const userCache = new Map();
let signIn = null;
let flash = null; // a message for the view the next route shows

/** An API refusal with this page's own words for some codes. */
function explain(error, words) {
  if (error instanceof ApiError && words[error.code]) return new Error(words[error.code]);
  return error;
}

const fullName = (u) => `${u.firstName} ${u.lastName}`.trim() || u.email;
const initials = (u) => ((u.firstName || "").charAt(0) + (u.lastName || "").charAt(0)).toUpperCase() || "?";
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
/** "a", "a and b", "a, b and c". */
const inWords = (items) =>
  items.length > 1 ? `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}` : items.join("");
/** A user's MFA methods (`mfa.methods`), as the reset dialog names them. */
const METHOD_WORDS = {
  AUTHENTICATOR: "the authenticator app",
  EMAIL: "email codes",
  RECOVERY: "recovery codes",
};

// ---- start, routing

async function onSignedIn() {
  const s = session.get();
  me = await call("GET", "/user/users/me");
  $("#who-name").textContent = `${fullName(me)} (${me.email})`;
  $("#who").hidden = false;
  const membership = me.memberships.find((m) => m.orgId === s.orgId);
  const isAdmin = me.isSuperAdmin || (membership && membership.isAdmin && membership.isActive);
  if (!isAdmin) {
    // Not (or no longer) an admin here: nothing of the org stays in the page.
    forgetOrg();
    showView(VIEWS, "forbidden-view");
    return;
  }
  org = await call("GET", `/user/org/${s.orgId}`);
  $(".brand").textContent = `MFA Admin · ${org.name}`;
  $("#admin-nav").hidden = false;
  await route();
  if (s.setupDueAt) {
    say(`Your org asks for multi-factor authentication: set it up on your account page before ${formatTime(s.setupDueAt)}.`);
  }
}

/** Forget everything the page holds about the session and its org. */
function onSignedOut() {
  forgetOrg();
  me = null;
  $("#who").hidden = true;
  $("#who-name").textContent = "";
  // The next person in this tab starts at User Management.
  history.replaceState(null, "", location.pathname);
}

/**
 * Forget the org's data: user rows, counts, the Edit User form, org
 * settings, audit rows, the search and the filters.
 */
function forgetOrg() {
  org = null;
  editing = null;
  userCache.clear();
  clearTimeout(users.timer);
  Object.assign(users, { search: "", page: 0, seq: users.seq + 1, timer: 0 });
  Object.assign(audit, { page: 0, userText: "", action: "", from: "", to: "", client: "", seq: audit.seq + 1 });
  $("#admin-nav").hidden = true;
  $(".brand").textContent = "MFA Admin";
  // User Management
  $("#user-search").value = "";
  $("#user-list").replaceChildren();
  $("#user-counts").textContent = "";
  $("#users-page").textContent = "";
  $("#user-empty").hidden = true;
  // Create User and Edit User
  $("#create-form").reset();
  $("#profile-form").reset();
  $("#edit-title").textContent = "User Management: Edit User";
  $("#user-mfa").textContent = "";
  $("#edit-email-pending").hidden = true;
  $("#edit-email-pending-text").textContent = "";
  $("#edit-self-password").hidden = true;
  for (const toggle of $$("#edit-view input.switch")) toggle.checked = false;
  $("#user-audit-link").href = "#/audit";
  for (const dialog of $$("dialog")) if (dialog.open) dialog.close();
  // Org settings
  $("#org-name").textContent = "";
  $("#toggle-enforce").checked = false;
  $("#org-enforced-at").textContent = "";
  $("#grace-hours").value = "";
  // Audit trail
  setAuditFilterFields();
  $("#audit-rows").replaceChildren();
  $("#audit-page").textContent = "";
  $("#audit-empty").hidden = true;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query) };
}

async function route() {
  if (!org || !session.get()) return;
  const { parts, params } = parseHash();
  const section = parts[0] || "users";
  for (const link of $$("#admin-nav a[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearMessages();
  if (flash) {
    say(flash);
    flash = null;
  }
  if (section === "users" && parts[1] === "new") return showCreate();
  if (section === "users" && parts[1]) return showEdit(Number(parts[1]));
  if (section === "org") return showOrg();
  if (section === "audit") return showAudit(params);
  return showUsers();
}

window.addEventListener("hashchange", () => {
  route().catch(fail);
});

// ---- User Management

async function showUsers() {
  showView(VIEWS, "users-view");
  $("#user-search").value = users.search;
  await Promise.all([loadUsers(), loadCounts()]);
}

async function loadCounts() {
  try {
    const c = await call("GET", "/user/users/retrieveNotExcludeFromMembershipUserCounts");
    $("#user-counts").textContent = `${c.licensed} Licensed Users | ${c.enabled} Enabled | ${c.inactive} Inactive`;
  } catch (error) {
    fail(error);
  }
}

function userQuery(page, size) {
  const q = new URLSearchParams({ page: String(page), size: String(size) });
  if (users.search) q.set("search", users.search);
  return q;
}

async function loadUsers() {
  const seq = ++users.seq;
  const list = $("#user-list");
  list.setAttribute("aria-busy", "true");
  try {
    const page = await call("GET", "/user/users/page?" + userQuery(users.page, PAGE_SIZE));
    if (seq !== users.seq) return;
    const pages = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
    if (users.page > 0 && users.page >= pages) {
      users.page = pages - 1;
      await loadUsers();
      return;
    }
    list.replaceChildren(...page.items.map(userRow));
    $("#user-empty").hidden = page.items.length > 0;
    $("#users-page").textContent = `Page ${users.page + 1} of ${pages} · ${plural(page.total, "user")}`;
    $("#users-prev").disabled = users.page === 0;
    $("#users-next").disabled = users.page + 1 >= pages;
  } catch (error) {
    if (seq === users.seq) fail(error);
  } finally {
    if (seq === users.seq) list.setAttribute("aria-busy", "false");
  }
}

/**
 * What an admin checks at a glance: the user's factors, and what their
 * membership of this org exempts or withholds (an audit found opted-out
 * and disabled members shown as any member without MFA).
 */
function userBadges(u) {
  const badges = [h("span", { class: "badge" + (u.mfa.enrolled ? " on" : "") }, u.mfa.enrolled ? "MFA set up" : "No MFA")];
  if (u.membership.mfaOptOut) badges.push(h("span", { class: "badge warn" }, "Opted out of org MFA"));
  if (!u.membership.isActive) badges.push(h("span", { class: "badge warn" }, "Access disabled"));
  if (u.membership.isAdmin) badges.push(h("span", { class: "badge" }, "Admin"));
  return badges;
}

function userRow(u) {
  userCache.set(u.id, u);
  return h(
    "li",
    { class: "user-row", "data-user-id": u.id },
    h("span", { class: "avatar", "aria-hidden": "true" }, initials(u)),
    h("a", { class: "user-name", href: `#/users/${u.id}` }, fullName(u)),
    h("span", { class: "badges" }, ...userBadges(u)),
    h("span", { class: "user-email" }, u.email),
    h("span", { class: "user-login" }, "Last login: " + (u.lastLoginAt ? formatTime(u.lastLoginAt) : "Never")),
  );
}

function searchChanged(event) {
  clearTimeout(users.timer);
  const value = event.currentTarget.value.trim();
  users.timer = setTimeout(() => {
    if (value === users.search) return;
    users.search = value;
    users.page = 0;
    loadUsers();
  }, 250);
}
// "input" as you type; "change" also for a field cleared by a script or
// an assistive tool.
$("#user-search").addEventListener("input", searchChanged);
$("#user-search").addEventListener("change", searchChanged);
/**
 * After a pager button is pressed and its page loaded: a button disabled
 * on the first or last page drops the keyboard focus to the page, so it
 * goes to the other button, or to the page count.
 */
function keepPagerFocus(pressed, other, count) {
  if (!pressed.disabled) return;
  if (!other.disabled) other.focus();
  else count.focus();
}
// A pager's button does nothing while its page is on the way: a double
// click skipped a page. (Disabled meanwhile, it took the keyboard's focus.)
let pagerBusy = false;

/** `step` to the page `load` loads, then keep the focus on the pager. */
async function turnPage(step, load, pressed, other, count) {
  if (pagerBusy) return;
  pagerBusy = true;
  try {
    step();
    await load();
  } finally {
    pagerBusy = false;
  }
  keepPagerFocus(pressed, other, count);
}

$("#users-prev").addEventListener("click", () =>
  turnPage(
    () => {
      users.page = Math.max(0, users.page - 1);
    },
    loadUsers,
    $("#users-prev"),
    $("#users-next"),
    $("#users-page"),
  ),
);
$("#users-next").addEventListener("click", () =>
  turnPage(
    () => {
      users.page += 1;
    },
    loadUsers,
    $("#users-next"),
    $("#users-prev"),
    $("#users-page"),
  ),
);

function csvCell(value) {
  let s = value === null || value === undefined ? "" : String(value);
  // A cell starting with = + - @ is a formula in spreadsheet programs.
  // Where the list separator is ";" (German, French, Dutch, ... Excel),
  // every ";" starts a cell too, quotes or not: what follows one is
  // guarded alike, and such a cell quoted for the comma's readers.
  // (Quotes first do not hide one: `;"=1+1` is guarded too.)
  s = s.replace(/(^|;)(?="*[=+\-@\t\r])/g, "$1'");
  return /[",;\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

$("#export-csv").addEventListener("click", (event) =>
  busy(event.currentTarget, async () => {
    clearMessages();
    const size = 200;
    const all = [];
    for (let page = 0; ; page += 1) {
      const p = await call("GET", "/user/users/page?" + userQuery(page, size));
      all.push(...p.items);
      if (p.items.length < size || all.length >= p.total) break;
    }
    const header = [
      "id",
      "firstName",
      "lastName",
      "email",
      "lastLoginAt",
      "mfaEnrolled",
      "mfaMethods",
      "active",
      "admin",
      "mfaOptOut",
    ];
    const yes = (on) => (on ? "yes" : "no");
    const rows = all.map((u) => [
      u.id,
      u.firstName,
      u.lastName,
      u.email,
      u.lastLoginAt || "Never",
      yes(u.mfa.enrolled),
      u.mfa.methods.join(" "),
      yes(u.membership.isActive),
      yes(u.membership.isAdmin),
      yes(u.membership.mfaOptOut),
    ]);
    // The byte-order mark tells spreadsheet programs (Excel) that the
    // file is UTF-8, so that names such as “Zoë” or “Øyvind” read right.
    const csv = "\uFEFF" + [header, ...rows].map((r) => r.map(csvCell).join(",")).join("\r\n") + "\r\n";
    download(`users-org-${org.id}.csv`, csv, "text/csv;charset=utf-8");
    say(`Exported ${plural(all.length, "user")} as CSV.`);
  }),
);

// ---- Create User

function showCreate() {
  $("#create-form").reset();
  showView(VIEWS, "create-view");
}

$("#create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = {
    firstName: $("#create-first").value.trim(),
    lastName: $("#create-last").value.trim(),
    email: $("#create-email").value.trim(),
    password: $("#create-password").value,
    isAdmin: $("#create-admin").checked,
  };
  busy(event.submitter, async () => {
    let user;
    try {
      user = await call("POST", "/user/users", body);
    } catch (error) {
      throw explain(error, { conflict: `A user with the email ${body.email} exists already. Nothing was created` });
    }
    $("#create-form").reset();
    userCache.set(user.id, user);
    flash = `${fullName(user)} was created${body.isAdmin ? " as an admin of this org" : ""}. Give them their first password in person; they can change it on their account page.`;
    location.hash = `#/users/${user.id}`;
  });
});

// ---- Edit User

const isSelf = (user) => Boolean(me && user && me.id === user.id);

function setEditEnabled(enabled) {
  for (const el of $$("#edit-view input, #edit-view button")) el.disabled = !enabled;
}

async function showEdit(id) {
  editing = null;
  $("#edit-title").textContent = "User Management: Edit User";
  $("#profile-form").reset();
  $("#user-mfa").textContent = "";
  setEditEnabled(false);
  $("#edit-forms").hidden = false;
  showView(VIEWS, "edit-view");
  try {
    const [user, membership, fresh] = await Promise.all([
      call("GET", `/user/users/${id}`),
      call("GET", `/user/org/${org.id}/user/${id}`),
      call("GET", `/user/org/${org.id}`),
    ]);
    org = fresh;
    userCache.set(user.id, user);
    editing = { user, membership, pendingEmail: user.pendingEmail ? user.pendingEmail.newEmail : null };
    renderEdit();
    setEditEnabled(true);
  } catch (error) {
    // No form for a user that could not be read: its switches would show
    // states of nobody (an audit saw them under "Membership not found").
    $("#edit-forms").hidden = true;
    fail(error);
  }
}

/** Under "Enforce org-level MFA": what its state means now. */
function showOptOutHint() {
  $("#toggle-mfa-hint").textContent = editing.membership.mfaOptOut
    ? "Off: this user is opted out of MFA in this org, whether or not the org enforces it."
    : "On: this user uses MFA when the org enforces it. Off opts them out.";
}

function renderEdit() {
  const { user, membership, pendingEmail } = editing;
  $("#edit-title").textContent = `User Management: Edit User: ${fullName(user)}`;
  $("#edit-first").value = user.firstName;
  $("#edit-last").value = user.lastName;
  $("#edit-email").value = user.email;
  for (const toggle of $$("#edit-view input.switch")) {
    const value = Boolean(membership[toggle.dataset.field]);
    toggle.checked = toggle.dataset.inverted === "true" ? !value : value;
  }
  showOptOutHint();
  // Leaving an org oneself is not done from the console one administers.
  $("#remove-member").hidden = isSelf(user);
  $("#sign-out-user").textContent = isSelf(user) ? "Sign out my other sessions" : "Sign out everywhere";
  $("#user-mfa").textContent = user.mfa.enrolled
    ? `Multi-factor authentication is set up: ${user.mfa.methods.map((m) => METHOD_NAMES[m] || m).join(", ")}.`
    : "Multi-factor authentication is not set up.";
  $("#reset-mfa").textContent = org.isMfaEnforced ? "Reset org-level MFA for this user" : "Reset MFA for this user";
  $("#user-audit-link").href = `#/audit?user=${user.id}`;
  $("#edit-self-password").hidden = !isSelf(user);
  $("#edit-current-password").value = "";
  $("#edit-email-pending").hidden = !pendingEmail;
  $("#edit-email-pending-text").textContent = pendingEmail
    ? `Pending: the email address changes to ${pendingEmail} once ${isSelf(user) ? "you confirm" : "the user confirms"} it with the token mailed there. Until then it stays ${user.email}.`
    : "";
}

$("#profile-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!editing) return;
  const { user } = editing;
  const body = {};
  const first = $("#edit-first").value.trim();
  const last = $("#edit-last").value.trim();
  const email = $("#edit-email").value.trim();
  if (first !== user.firstName) body.firstName = first;
  if (last !== user.lastName) body.lastName = last;
  if (email.toLowerCase() !== user.email.toLowerCase()) body.email = email;
  clearMessages();
  if (Object.keys(body).length === 0) {
    say("Nothing to change.");
    return;
  }
  if (body.email && isSelf(user)) {
    // One's own email needs the current password, as on the account page.
    body.currentPassword = $("#edit-current-password").value;
    $("#edit-current-password").value = "";
    if (!body.currentPassword) {
      fail(new Error("Enter your current password to change your own email address"));
      $("#edit-current-password").focus();
      return;
    }
  }
  const current = editing;
  busy(event.submitter, async () => {
    let updated;
    try {
      updated = await call("PUT", `/user/users/${user.id}`, body);
    } catch (error) {
      throw explain(error, {
        invalid_credentials: "Your current password is wrong. Nothing was changed",
        conflict: `${body.email} belongs to another account. Nothing was changed`,
      });
    }
    if (editing !== current) return;
    editing.user = updated;
    if (body.email) editing.pendingEmail = body.email;
    renderEdit();
    if (body.email) {
      $("#edit-email").value = updated.email;
      say(
        `Saved. The email change is pending: a confirmation token was sent to ${body.email}, and the address stays ${updated.email} until it is confirmed.`,
      );
    } else {
      say(`User information saved for ${fullName(updated)}.`);
    }
  });
});

$("#resend-email-change").addEventListener("click", (event) => {
  if (!editing) return;
  const { user, pendingEmail } = editing;
  clearMessages();
  busy(event.currentTarget, async () => {
    try {
      await call("POST", "/user/users/email/resendChangeConfirmation", { userId: user.id });
    } catch (error) {
      throw explain(error, {
        not_found: `${fullName(user)} has no pending email change: it was confirmed already, or it expired`,
      });
    }
    say(`The confirmation was sent again to ${pendingEmail}. The older token no longer works.`);
  });
});

/**
 * Ask with the dialog `#{name}-dialog` before a change that weakens sign-in
 * or takes rights away: true to go on (its `#{name}-confirm` button), false
 * for `#{name}-cancel` or Escape.
 */
function confirmWith(name) {
  const dialog = $(`#${name}-dialog`);
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener("close", onClose);
      $(`#${name}-cancel`).removeEventListener("click", onCancel);
      $(`#${name}-confirm`).removeEventListener("click", onConfirm);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onClose = () => done(false);
    const onCancel = () => done(false);
    const onConfirm = () => done(true);
    dialog.addEventListener("close", onClose);
    $(`#${name}-cancel`).addEventListener("click", onCancel);
    $(`#${name}-confirm`).addEventListener("click", onConfirm);
    dialog.showModal();
  });
}

for (const toggle of $$("#edit-view input.switch")) {
  toggle.addEventListener("change", async () => {
    if (!editing) return;
    const field = toggle.dataset.field;
    const inverted = toggle.dataset.inverted === "true";
    const value = inverted ? !toggle.checked : toggle.checked;
    const label = $(`label[for="${toggle.id}"]`).textContent;
    const name = fullName(editing.user);
    const ownAdmin = field === "isAdmin" && !value && isSelf(editing.user);
    const disabling = field === "isActive" && !value;
    const ownOptOut = field === "mfaOptOut" && value && isSelf(editing.user);
    clearMessages();
    if (disabling) {
      $("#disable-dialog-text").textContent =
        `${name} (${editing.user.email}) can no longer sign in to ${org.name}, and their sessions in it end, ` +
        "until access is enabled again. Their membership, account and MFA stay.";
    }
    const declined =
      (ownAdmin && !(await confirmWith("self-admin"))) ||
      (disabling && !(await confirmWith("disable"))) ||
      (ownOptOut && !(await confirmWith("self-opt-out")));
    if (declined) {
      toggle.checked = !toggle.checked;
      toggle.focus();
      return;
    }
    toggle.disabled = true;
    try {
      await call("PUT", `/user/users/${editing.user.id}/membership?byRef=false`, { [field]: value });
      editing.membership[field] = value;
      showOptOutHint();
      if (ownAdmin) {
        // Leave the console as it now is for this account: a superadmin
        // keeps it, anyone else sees that it is for admins only.
        editing = null;
        history.replaceState(null, "", location.pathname);
        await onSignedIn();
        say(
          me && me.isSuperAdmin
            ? "Your Admin right in this org was removed. As a superadmin you keep this console."
            : "Your Admin right in this org was removed: this console is for admins only.",
        );
        return;
      }
      say(
        `${label} turned ${toggle.checked ? "on" : "off"} for ${name}.` +
          (disabling ? " They can no longer sign in to this org, and their sessions in it ended." : ""),
      );
    } catch (error) {
      toggle.checked = !toggle.checked;
      fail(
        editing && editing.user.isSuperAdmin && !(me && me.isSuperAdmin)
          ? explain(error, { forbidden: `${name} is a superadmin: only a superadmin can change their account. Nothing was changed` })
          : error,
      );
    } finally {
      toggle.disabled = false;
      if (document.contains(toggle) && !toggle.closest("[hidden]")) toggle.focus();
    }
  });
}

const resetDialog = $("#reset-dialog");

$("#reset-mfa").addEventListener("click", () => {
  if (!editing) return;
  clearMessages();
  const self = isSelf(editing.user);
  $("#reset-dialog-self").hidden = !self;
  // A hidden element named in aria-describedby is read all the same: the
  // warning about one's own account is named only when it is shown.
  resetDialog.setAttribute(
    "aria-describedby",
    self ? "reset-dialog-text reset-dialog-who reset-dialog-self" : "reset-dialog-text reset-dialog-who",
  );
  // What goes, said before it goes: factors are the user's, not the org's;
  // only what the user has (a user with none was told they lose all).
  const who = `${fullName(editing.user)} (${editing.user.email})`;
  const had = editing.user.mfa.methods.map((method) => METHOD_WORDS[method] || method);
  $("#reset-dialog-who").textContent = had.length
    ? `${who} loses ${inWords(had)} in every org they belong to, is signed out everywhere, and is told by mail.`
    : `${who} has no MFA set up: the reset signs them out everywhere and withdraws a setup in progress.`;
  resetDialog.showModal();
});

// Sessions ended, factors kept: a laptop left signed in. One's own
// account: the other sessions (this one goes on).
$("#sign-out-user").addEventListener("click", async (event) => {
  if (!editing) return;
  clearMessages();
  const button = event.currentTarget;
  const { user } = editing;
  const name = fullName(user);
  const self = isSelf(user);
  $("#sign-out-dialog-title").textContent = self
    ? "Sign out your other sessions?"
    : "Sign this user out everywhere?";
  $("#sign-out-dialog-text").textContent = self
    ? "Every other session of your account ends, in every org; this one goes on. Your password and MFA stay as they are."
    : `${name} (${user.email}) is signed out of every session, in every org they belong to. ` +
      "Their password and MFA stay as they are: they can sign in again at once (if their password or phone may be in other hands, change the password or reset MFA instead).";
  if (!(await confirmWith("sign-out"))) {
    button.focus();
    return;
  }
  button.disabled = true;
  try {
    const { sessionsEnded } = await call("POST", `/user/users/${user.id}/logout`);
    const ended = sessionsEnded === 0 ? "no session was open" : `${plural(sessionsEnded, "session")} ended`;
    say(self ? `Your other sessions: ${ended}.` : `${name} was signed out: ${ended}.`);
  } catch (error) {
    fail(
      user.isSuperAdmin && !(me && me.isSuperAdmin)
        ? explain(error, {
            forbidden: `${name} is a superadmin: only a superadmin can sign them out. Nothing was changed`,
          })
        : error,
    );
  } finally {
    button.disabled = false;
    button.focus();
  }
});

// A leaver: out of this org, sessions in it ended; the account and its
// factors stay (other orgs, and only a superadmin deletes an account).
$("#remove-member").addEventListener("click", async (event) => {
  if (!editing) return;
  clearMessages();
  const button = event.currentTarget;
  const { user } = editing;
  const name = fullName(user);
  // Only a superadmin may take an org's last admin away (an org admin
  // removing anyone else stays one): said before it is done.
  let last = false;
  if (me && me.isSuperAdmin && editing.membership.isAdmin && editing.membership.isActive) {
    try {
      const admins = await call("GET", `/user/users/admins/${org.id}`);
      last = admins.length === 1 && admins[0].id === user.id;
    } catch (error) {
      fail(error);
      return;
    }
  }
  $("#remove-dialog-text").textContent =
    `${name} (${user.email}) can no longer sign in to ${org.name}, and their sessions in it end. ` +
    "Their account and their MFA stay: they may belong to other orgs, and a superadmin can delete the account." +
    (last ? ` They are the org's last active admin: ${org.name} is left without one until a superadmin makes another.` : "");
  if (!(await confirmWith("remove"))) {
    button.focus();
    return;
  }
  button.disabled = true;
  try {
    await call("DELETE", `/user/org/${org.id}/user/${user.id}`);
    editing = null;
    history.replaceState(null, "", `${location.pathname}#/users`);
    await route();
    say(`${name} was removed from this org.`);
  } catch (error) {
    fail(
      explain(error, {
        conflict: `${name} is the org's last active admin: make another member an admin first. Nothing was changed`,
        forbidden: `${name} is a superadmin: only a superadmin can change their account. Nothing was changed`,
      }),
    );
  } finally {
    button.disabled = false;
  }
});

$("#reset-cancel").addEventListener("click", () => {
  resetDialog.close();
  $("#reset-mfa").focus();
});

$("#reset-confirm").addEventListener("click", async (event) => {
  if (!editing) return;
  const button = event.currentTarget;
  const { user } = editing;
  button.disabled = true;
  const self = isSelf(user);
  // Closed first: a challenge may be asked for before the reset is done.
  resetDialog.close();
  try {
    await call("PUT", "/user/users/mfa/reset", { ids: [user.id] });
    if (self) {
      // The reset ended this session too: sign-in, saying what happened.
      session.clear();
      onSignedOut();
      signIn.show();
      say(
        "Your MFA was reset and all your sessions ended, this one too. Sign in again, then set up multi-factor authentication anew (at sign-in where your org enforces it, else on your account page).",
      );
      return;
    }
    editing.user = await call("GET", `/user/users/${user.id}`);
    renderEdit();
    say(`MFA was reset for ${fullName(user)}. They set it up again at their next sign-in.`);
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
    if (editing) $("#reset-mfa").focus();
  }
});

// ---- Org settings

async function showOrg() {
  $("#sandbox-warning").hidden = document.documentElement.dataset.environment !== "sandbox";
  showView(VIEWS, "org-view");
  try {
    org = await call("GET", `/user/org/${org.id}`);
    renderOrg();
  } catch (error) {
    fail(error);
  }
}

function renderOrg() {
  $("#org-name").textContent = org.name;
  $("#toggle-enforce").checked = org.isMfaEnforced;
  $("#org-enforced-at").textContent =
    org.isMfaEnforced && org.mfaEnforcedAt
      ? `MFA enforced since ${formatTime(org.mfaEnforcedAt)}.`
      : "MFA is not enforced: only members who opted in use it.";
  $("#grace-hours").value = String(org.mfaGracePeriodHours);
}

$("#toggle-enforce").addEventListener("change", async (event) => {
  const toggle = event.currentTarget;
  const on = toggle.checked;
  clearMessages();
  // Off weakens every member's sign-in at once: asked first.
  if (!on && !(await confirmWith("unenforce"))) {
    toggle.checked = true;
    toggle.focus();
    return;
  }
  toggle.disabled = true;
  try {
    await call("PUT", "/user/org/mfa", { isMfaEnforced: on });
    org = await call("GET", `/user/org/${org.id}`);
    renderOrg();
    say(
      on
        ? "MFA is now enforced for this org. Members who are not opted out set it up or use it at their next sign-in."
        : "MFA is no longer enforced for this org.",
    );
  } catch (error) {
    toggle.checked = !on;
    fail(error);
  } finally {
    toggle.disabled = false;
    toggle.focus();
  }
});

$("#grace-form").addEventListener("submit", (event) => {
  event.preventDefault();
  clearMessages();
  const hours = Number($("#grace-hours").value);
  busy(event.submitter, async () => {
    org = await call("PUT", `/user/org/${org.id}`, { mfaGracePeriodHours: hours });
    renderOrg();
    say(`Grace period saved: ${plural(org.mfaGracePeriodHours, "hour")}.`);
  });
});

// ---- Audit trail

/** Words for the audit actions; the filter keeps the codes as its values. */
const ACTION_LABELS = {
  org_created: "Org created",
  org_updated: "Org updated",
  org_deleted: "Org deleted",
  mfa_enforced: "MFA enforced on the org",
  mfa_unenforced: "MFA no longer enforced on the org",
  membership_created: "Member added",
  membership_updated: "Membership changed",
  membership_deleted: "Member removed",
  mfa_opt_out: "Opted out of org MFA",
  mfa_opt_out_removed: "Org MFA enforced again for the user",
  personal_mfa_opt_in: "Personal MFA turned on",
  personal_mfa_opt_out: "Personal MFA turned off",
  mfa_reset: "MFA reset",
  authenticator_reset: "Authenticator reset",
  authenticator_enrollment_started: "Authenticator setup started",
  authenticator_enrolled: "Authenticator set up",
  email_enrollment_started: "Email codes setup started",
  email_enrolled: "Email codes set up",
  email_code_sent: "Email code sent",
  email_code_withdrawn: "Email code withdrawn (not delivered)",
  mfa_verify_succeeded: "MFA code accepted",
  mfa_verify_failed: "MFA code refused",
  replay_refused: "Reused code refused",
  locked_out: "Locked out",
  refused_while_locked_out: "Refused while locked out",
  recovery_codes_generated: "Recovery codes generated",
  recovery_code_used: "Recovery code used",
  login_succeeded: "Signed in",
  login_failed: "Sign-in failed",
  logout: "Signed out",
  sessions_ended: "Signed out everywhere",
  user_created: "User created",
  user_updated: "User updated",
  user_deleted: "User deleted",
  email_change_requested: "Email change asked for",
  email_changed: "Email address changed",
  email_change_refused: "Email change refused",
  super_admin_joined_org: "Superadmin joined the org",
};

/** A cell of the audit table; on a phone its label goes before it. */
function cell(cls, label, ...content) {
  return h("td", { class: cls, "data-label": label }, h("span", { class: "cell" }, ...content));
}

/**
 * The words of an event's action. A login whose password was right but
 * whose second factor is still owed is no sign-in yet: its detail says so
 * (`mfa: challenge_required`), and so do the words.
 */
function eventLabel(event) {
  if (event.action === "login_succeeded" && event.detail !== "mfa: none") {
    return event.detail === "mfa: setup_required" ? "Password accepted, MFA setup owed" : "Password accepted, MFA owed";
  }
  return actionLabel(event.action);
}

function actionLabel(code) {
  if (ACTION_LABELS[code]) return ACTION_LABELS[code];
  const words = String(code).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// The options come from the server with the codes as their text.
for (const option of $$("#audit-action option")) {
  if (option.value) option.textContent = actionLabel(option.value);
}

async function showAudit(params) {
  if (params.has("user")) {
    // From "View this user's audit trail": all of it, whatever was
    // filtered before; the address reads better than the id.
    const id = params.get("user");
    const known = userCache.get(Number(id));
    Object.assign(audit, { userText: known ? known.email : id, action: "", from: "", to: "", client: "" });
  }
  audit.page = 0;
  setAuditFilterFields();
  showView(VIEWS, "audit-view");
  await loadAudit();
}

/** A user id from an id or an email/name typed into the filter. */
async function resolveUser(text) {
  if (!text) return null;
  if (/^\d+$/.test(text)) return Number(text);
  const q = new URLSearchParams({ search: text, page: "0", size: "200" });
  const found = (await call("GET", "/user/users/page?" + q)).items;
  const wanted = text.toLowerCase();
  const exact = found.filter((u) => u.email.toLowerCase() === wanted || fullName(u).toLowerCase() === wanted);
  if (exact.length === 1) return exact[0].id;
  if (found.length === 1) return found[0].id;
  throw new Error(
    found.length
      ? `More than one user matches “${text}”; type the whole email address`
      : `No user of this org matches “${text}”`,
  );
}

function who(id) {
  if (id === null || id === undefined) return "—";
  const u = userCache.get(id);
  return u ? u.email : `user #${id}`;
}

/** The filter fields as `audit` holds them. */
function setAuditFilterFields() {
  $("#audit-user").value = audit.userText;
  $("#audit-action").value = audit.action;
  $("#audit-from").value = audit.from;
  $("#audit-to").value = audit.to;
  $("#audit-client").value = audit.client;
}

/** A time field's value (`2026-11-22T18:00`, read as UTC like the table) for the API. */
function utcTime(local) {
  return local.length === 16 ? `${local}:00Z` : `${local}Z`;
}

/** A time field's value the API can take, or an error in the form's words. */
function checkedTime(value, label) {
  // A date picker lets a year of more than four digits through.
  if (value && !/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$/.test(value)) {
    throw new Error(`${label}: enter a date and a time (UTC), such as 2026-11-22 18:00`);
  }
  return value;
}

async function loadAudit() {
  const seq = ++audit.seq;
  const body = $("#audit-rows");
  body.parentElement.setAttribute("aria-busy", "true");
  try {
    checkedTime(audit.from, "From");
    checkedTime(audit.to, "Until");
    if (audit.from && audit.to && utcTime(audit.from) >= utcTime(audit.to)) {
      throw new Error("Until must be after From");
    }
    const userId = await resolveUser(audit.userText.trim());
    const q = new URLSearchParams({ size: String(AUDIT_PAGE_SIZE) });
    if (audit.page > 0) q.set("beforeId", String(audit.cursors[audit.page]));
    if (userId) q.set("userId", String(userId));
    if (audit.action) q.set("action", audit.action);
    if (audit.from) q.set("from", utcTime(audit.from));
    if (audit.to) q.set("to", utcTime(audit.to));
    if (audit.client) q.set("clientAddress", audit.client);
    const page = await call("GET", "/user/audit?" + q);
    if (seq !== audit.seq) return;
    const unknown = [
      ...new Set(page.items.flatMap((e) => [e.actorUserId, e.targetUserId]).filter((id) => id && !userCache.has(id))),
    ];
    if (unknown.length) {
      try {
        for (const u of await call("GET", "/user/users?ids=" + unknown.join(","))) userCache.set(u.id, u);
      } catch {
        // Ids stay ids.
      }
    }
    if (seq !== audit.seq) return;
    body.replaceChildren(
      ...page.items.map((e) =>
        h(
          "tr",
          { "data-action": e.action },
          cell("time", "Time", formatTime(e.at, { seconds: true })),
          cell("action", "Action", eventLabel(e), " ", h("code", { class: "action-code" }, e.action)),
          cell("who", "By", who(e.actorUserId)),
          cell("who", "User", who(e.targetUserId)),
          cell("client", "From", e.clientAddress ?? "—"),
          cell("detail", "Detail", e.detail),
        ),
      ),
    );
    // Past the first page, `total` counts the events from this page on.
    if (audit.page === 0) audit.total = page.total;
    audit.lastId = page.items.length ? page.items[page.items.length - 1].id : null;
    const pages = audit.page + Math.max(1, Math.ceil(page.total / AUDIT_PAGE_SIZE));
    $("#audit-empty").hidden = page.items.length > 0;
    $("#audit-page").textContent = `Page ${audit.page + 1} of ${pages} · ${plural(audit.total, "event")}`;
    $("#audit-prev").disabled = audit.page === 0;
    $("#audit-next").disabled = audit.page + 1 >= pages;
  } catch (error) {
    if (seq === audit.seq) {
      // The rows of the filter before must not stand under this one.
      body.replaceChildren();
      $("#audit-empty").hidden = true;
      $("#audit-page").textContent = "";
      $("#audit-prev").disabled = true;
      $("#audit-next").disabled = true;
      // The API names its parameter; the form, its field.
      fail(
        error instanceof ApiError && /^the clientAddress filter/i.test(error.message)
          ? new Error("IP address: not an IP address, such as 203.0.113.7 or 2001:db8::1 (one address, not a range)")
          : error,
      );
    }
  } finally {
    if (seq === audit.seq) body.parentElement.setAttribute("aria-busy", "false");
  }
}

$("#audit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  clearMessages();
  audit.userText = $("#audit-user").value.trim();
  audit.action = $("#audit-action").value;
  audit.from = $("#audit-from").value;
  audit.to = $("#audit-to").value;
  audit.client = $("#audit-client").value.trim();
  audit.page = 0;
  loadAudit();
});
$("#audit-clear").addEventListener("click", () => {
  clearMessages();
  Object.assign(audit, { userText: "", action: "", from: "", to: "", client: "", page: 0 });
  setAuditFilterFields();
  if (parseHash().params.has("user")) location.hash = "#/audit";
  else loadAudit();
});
$("#audit-prev").addEventListener("click", () =>
  turnPage(
    () => {
      audit.page = Math.max(0, audit.page - 1);
    },
    loadAudit,
    $("#audit-prev"),
    $("#audit-next"),
    $("#audit-page"),
  ),
);
$("#audit-next").addEventListener("click", () => {
  if (audit.lastId === null) return;
  return turnPage(
    () => {
      audit.cursors[audit.page + 1] = audit.lastId;
      audit.page += 1;
    },
    loadAudit,
    $("#audit-next"),
    $("#audit-prev"),
    $("#audit-page"),
  );
});

signIn = boot({ views: VIEWS, onSignedIn, onSignedOut });
