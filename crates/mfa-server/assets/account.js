// The self-service page: the caller's MFA status (mfaDetails), authenticator
// and email enrollment, recovery codes shown once, self reset, the
// personal opt-in, the own email address and password, and (signed in or
// not) the confirmation of a new email address. Every action is a call to
// the JSON API (spec/API.md).

import {
  $,
  ApiError,
  api,
  boot,
  busy,
  call,
  clearMessages,
  copy,
  download,
  fail,
  formatTime,
  mountAuthenticatorEnrollment,
  mountEmailEnrollment,
  say,
  session,
  showView,
} from "./common.js";

const VIEWS = ["signin-view", "account-view", "confirm-email-view"];
const CONFIRM_HASH = "#confirm-email";

/**
 * The token of the confirmation mail's link (`#confirm-email=TOKEN`: a
 * fragment, which no server or proxy logs), taken out of the address bar
 * and the history at once and kept for the form.
 */
let linkedToken = "";

function takeLinkedToken() {
  const prefix = CONFIRM_HASH + "=";
  const hash = location.hash;
  if (!hash.startsWith(prefix)) return;
  history.replaceState(null, "", location.pathname + location.search + CONFIRM_HASH);
  try {
    linkedToken = decodeURIComponent(hash.slice(prefix.length)).trim();
  } catch {
    linkedToken = "";
  }
}
takeLinkedToken();

let me = null;
let details = null;
let org = null; // the session's org: whether it enforces MFA
let enrollingAuthenticator = false;
let recoveryCodes = [];
let pendingEmail = null; // the new address of a change waiting for its confirmation

const fullName = (u) => `${u.firstName} ${u.lastName}`.trim() || u.email;
const token = () => {
  const s = session.get();
  return s && s.token;
};

/** An API refusal with this page's own words for some codes. */
function explain(error, words) {
  if (error instanceof ApiError && words[error.code]) return new Error(words[error.code]);
  return error;
}

async function onSignedIn() {
  await refresh();
  if (location.hash === CONFIRM_HASH) showConfirm();
  else showView(VIEWS, "account-view");
}

function onSignedOut() {
  me = null;
  details = null;
  org = null;
  enrollingAuthenticator = false;
  recoveryCodes = [];
  pendingEmail = null;
  $("#who").hidden = true;
  $("#who-name").textContent = "";
  $("#recovery-result").hidden = true;
  $("#recovery-codes").replaceChildren();
  $("#enroll-authenticator").replaceChildren();
  $("#enroll-email").replaceChildren();
  $("#email-pending").hidden = true;
  $("#email-pending-text").textContent = "";
  $("#my-email").textContent = "";
  $("#email-form").reset();
  $("#password-change-form").reset();
  $("#confirm-email-form").reset();
}

async function refresh() {
  const [meAnswer, mfa, orgAnswer] = await Promise.all([
    call("GET", "/user/users/me"),
    call("GET", "/oauth/users/mfaDetails"),
    // Only for what signing in asks: the page works without it.
    call("GET", `/user/org/${session.get().orgId}`).catch(() => null),
  ]);
  me = meAnswer;
  org = orgAnswer;
  // The server knows of a change asked for elsewhere (another tab, an admin).
  pendingEmail = me.pendingEmail ? me.pendingEmail.newEmail : null;
  details = mfa;
  render();
}

/**
 * Whether signing in to the session's org asks this user for a second
 * factor, as the server decides it (spec/API.md, "The login decision"),
 * and why, in words.
 */
function signInAsks() {
  const membership = me.memberships.find((m) => m.orgId === session.get().orgId);
  const name = org ? org.name : "this org";
  if (membership && membership.mfaOptOut) {
    return { asks: false, why: `an admin of ${name} opted you out of its MFA` };
  }
  if (me.mfaOptIn) return { asks: true, why: "you opted in" };
  if (!org) return { asks: null, why: "whether this org enforces MFA could not be read" };
  if (org.isMfaEnforced) return { asks: true, why: `${name} enforces MFA` };
  return { asks: false, why: `${name} does not enforce MFA and you have not opted in` };
}

/** What a new factor changes at sign-in, for the message after it. */
function afterEnrollment(factor) {
  const { asks, why } = signInAsks();
  if (asks === null) return `${factor} verified.`;
  return asks
    ? `${factor} verified. Signing in asks you for a code (${why}).`
    : `${factor} verified. Signing in to this org does not ask for a code now (${why}); other orgs of yours may.`;
}

function setState(el, on, onText, offText) {
  el.textContent = on ? onText : offText;
  el.classList.toggle("on", on);
}

function render() {
  const s = session.get();
  $("#who-name").textContent = `${fullName(me)} (${me.email})`;
  $("#who").hidden = false;
  const membership = me.memberships.find((m) => m.orgId === s.orgId);
  $("#admin-link").hidden = !(me.isSuperAdmin || (membership && membership.isAdmin));

  const authenticator = Boolean(details.details.AUTHENTICATOR && details.details.AUTHENTICATOR.verified);
  const email = Boolean(details.details.EMAIL && details.details.EMAIL.verified);
  const anyFactor = authenticator || email;
  setState($("#status-authenticator"), authenticator, "Verified", "Not set up");
  setState($("#status-email"), email, "Verified", "Not set up");
  setState($("#status-recovery"), me.mfa.methods.includes("RECOVERY"), "Available", "None");
  const { asks, why } = signInAsks();
  setState(
    $("#status-sign-in"),
    asks === true,
    `asks for a second factor (${why})`,
    asks === null ? `not known (${why})` : `asks for none (${why})`,
  );
  // A first factor set up, no codes yet: the way back after a lost phone.
  $("#recovery-missing").hidden = !anyFactor || me.mfa.methods.includes("RECOVERY");

  const due = $("#setup-due");
  due.hidden = anyFactor || !s.setupDueAt;
  due.textContent = s.setupDueAt
    ? `Your org enforces multi-factor authentication. Set up a factor before ${formatTime(s.setupDueAt)}; after that, signing in needs it.`
    : "";

  $("#authenticator-verified").hidden = !authenticator;
  $("#authenticator-missing").hidden = authenticator || enrollingAuthenticator;
  if (authenticator) $("#enroll-authenticator").replaceChildren();

  $("#email-verified").hidden = !email;
  $("#email-address").textContent = me.email;
  $("#email-missing").hidden = email;
  if (email) {
    $("#enroll-email").replaceChildren();
  } else if (!$("#enroll-email").firstChild) {
    mountEmailEnrollment($("#enroll-email"), {
      token,
      request: call,
      onDone: async () => {
        $("#enroll-email").replaceChildren();
        await refresh();
        say(afterEnrollment("Email codes"));
        $("#status").focus();
      },
    });
  }

  $("#generate-recovery").disabled = !anyFactor;
  $("#recovery-needs-factor").hidden = anyFactor;
  $("#toggle-opt-in").checked = me.mfaOptIn;

  $("#my-email").textContent = me.email;
  if (pendingEmail && pendingEmail.toLowerCase() === me.email.toLowerCase()) pendingEmail = null;
  $("#email-pending").hidden = !pendingEmail;
  $("#email-pending-text").textContent = pendingEmail
    ? `Pending: ${pendingEmail} becomes your address once you enter the token mailed to it. Until then you sign in, and receive codes, with ${me.email}.`
    : "";
}

// ---- authenticator

$("#start-authenticator").addEventListener("click", async (event) => {
  enrollingAuthenticator = true;
  const widget = mountAuthenticatorEnrollment($("#enroll-authenticator"), {
    token,
    request: call,
    onDone: async () => {
      enrollingAuthenticator = false;
      $("#enroll-authenticator").replaceChildren();
      await refresh();
      say(afterEnrollment("Authenticator app"));
      $("#status").focus();
    },
    onCancel: () => {
      enrollingAuthenticator = false;
      $("#enroll-authenticator").replaceChildren();
      $("#authenticator-missing").hidden = false;
      $("#start-authenticator").focus();
    },
  });
  const button = event.currentTarget;
  $("#authenticator-missing").hidden = true;
  await widget.start(button);
  if (!$("#enroll-authenticator .enroll-form")) {
    // generateTempSecret failed: its error is shown; offer the button again.
    enrollingAuthenticator = false;
    $("#enroll-authenticator").replaceChildren();
    $("#authenticator-missing").hidden = false;
  }
});

const selfResetDialog = $("#self-reset-dialog");

$("#self-reset").addEventListener("click", () => {
  clearMessages();
  selfResetDialog.showModal();
});
$("#self-reset-cancel").addEventListener("click", () => {
  selfResetDialog.close();
  $("#self-reset").focus();
});
$("#self-reset-confirm").addEventListener("click", () => {
  // Closed first: a session that verified no factor is asked for one,
  // and the reset is done right after.
  selfResetDialog.close();
  return busy($("#self-reset"), async () => {
    await call("POST", "/users/mfa/resetMyQRCodeEnroll");
    await refresh();
    say("Your authenticator was reset. Set up a new one below.");
    $("#start-authenticator").focus();
  });
});

// ---- recovery codes

$("#generate-recovery").addEventListener("click", (event) =>
  busy(event.currentTarget, async () => {
    clearMessages();
    const answer = await call("POST", "/user/users/mfa/recoveryCodes");
    recoveryCodes = answer.codes;
    const list = $("#recovery-codes");
    list.replaceChildren(
      ...recoveryCodes.map((code) => {
        const li = document.createElement("li");
        li.textContent = code;
        return li;
      }),
    );
    $("#recovery-result").hidden = false;
    await refresh();
    say(`${recoveryCodes.length} new recovery codes. Older codes no longer work.`);
    list.focus();
  }),
);
$("#copy-recovery").addEventListener("click", () => copy(recoveryCodes.join("\n"), "Recovery codes"));
$("#download-recovery").addEventListener("click", () => {
  const text = `Recovery codes for ${me ? me.email : "your account"}\nEach code works once.\n\n${recoveryCodes.join("\n")}\n`;
  download("recovery-codes.txt", text, "text/plain;charset=utf-8");
  say("Recovery codes downloaded.");
});

// ---- personal opt-in

$("#toggle-opt-in").addEventListener("change", async (event) => {
  const toggle = event.currentTarget;
  const on = toggle.checked;
  clearMessages();
  toggle.disabled = true;
  try {
    await call("PUT", "/user/users/me/mfa", { mfaOptIn: on });
    me.mfaOptIn = on;
    render();
    say(on ? "From your next sign-in, MFA is asked every time." : "MFA is no longer asked for your own choice; your org may still require it.");
  } catch (error) {
    toggle.checked = !on;
    fail(error);
  } finally {
    toggle.disabled = false;
    toggle.focus();
  }
});

// ---- other sessions

$("#sign-out-others").addEventListener("click", async (event) => {
  if (!me) return;
  const button = event.currentTarget;
  clearMessages();
  button.disabled = true;
  try {
    const { sessionsEnded } = await call("POST", `/user/users/${me.id}/logout`);
    say(
      sessionsEnded === 0
        ? "No other session was open."
        : `${sessionsEnded} other session${sessionsEnded === 1 ? "" : "s"} ended. This one goes on.`,
    );
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
    button.focus();
  }
});

// ---- own email address and password

const WRONG_CURRENT_PASSWORD = {
  invalid_credentials: "Your current password is wrong. Nothing was changed",
};

$("#email-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!me) return;
  const email = $("#new-email").value.trim();
  const currentPassword = $("#email-current-password").value;
  $("#email-current-password").value = "";
  if (email.toLowerCase() === me.email.toLowerCase()) {
    fail(new Error(`${me.email} is your address already`));
    return;
  }
  busy(event.submitter, async () => {
    try {
      await call("PUT", `/user/users/${me.id}`, { email, currentPassword });
    } catch (error) {
      throw explain(error, {
        ...WRONG_CURRENT_PASSWORD,
        conflict: `${email} belongs to another account. Nothing was changed`,
      });
    }
    pendingEmail = email;
    $("#new-email").value = "";
    await refresh();
    say(
      `A confirmation token was sent to ${email}. Your address changes once you enter it under “Confirm a new email address”; until then it stays ${me.email}.`,
    );
  });
});

$("#resend-my-email").addEventListener("click", (event) =>
  busy(event.currentTarget, async () => {
    clearMessages();
    try {
      await call("POST", "/user/users/email/resendChangeConfirmation");
    } catch (error) {
      throw explain(error, {
        not_found: "There is no pending change of your email address: it was confirmed already, or it was never asked for",
      });
    }
    say(`A new token was sent to ${pendingEmail || "the new address"}. The older token no longer works.`);
  }),
);

$("#password-change-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!me) return;
  const password = $("#new-password").value;
  const again = $("#new-password-again").value;
  const currentPassword = $("#password-current").value;
  $("#password-current").value = "";
  if (password !== again) {
    fail(new Error("The two new passwords differ. Type the same new password twice"));
    $("#new-password-again").value = "";
    $("#new-password-again").focus();
    return;
  }
  busy(event.submitter, async () => {
    try {
      await call("PUT", `/user/users/${me.id}`, { password, currentPassword });
    } catch (error) {
      throw explain(error, WRONG_CURRENT_PASSWORD);
    } finally {
      $("#new-password").value = "";
      $("#new-password-again").value = "";
    }
    say("Your password was changed. Your other sessions were ended; this one goes on.");
  });
});

// ---- confirming a new email address (signed in or not)

/** Whether the server still takes this session (false once it ended). */
async function sessionWorks(s) {
  try {
    await api("GET", "/user/users/me", { token: s.token });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.code === "unauthorized") return false;
    throw error;
  }
}

function showConfirm() {
  $("#confirm-back").textContent = session.get() ? "Back to my account" : "Back to sign-in";
  showView(VIEWS, "confirm-email-view");
  if (linkedToken) {
    // Filled in, not sent: the person who got the mail confirms.
    $("#confirm-token").value = linkedToken;
    linkedToken = "";
    $("#confirm-email-form button[type=submit]").focus();
  } else {
    $("#confirm-token").focus();
  }
}

$("#confirm-email-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const tokenText = $("#confirm-token").value.trim();
  busy(event.submitter, async () => {
    // Whether this tab's session works before the confirmation, so that
    // one ended for another reason (idle, an admin) is not read after it
    // as ended by this change.
    if (session.get() && !(await sessionWorks(session.get()))) {
      session.clear();
      onSignedOut();
    }
    try {
      await api("POST", "/user/users/email/confirmChange", { body: { token: tokenText } });
    } catch (error) {
      throw explain(error, {
        invalid_code:
          "This token is not valid, so no address changed. Copy the whole token from the newest confirmation email: a token works once, and a new confirmation voids the older one",
        code_expired:
          "This token has expired (a token is valid for 24 hours), so no address changed. Change the email address again to get a new token",
        conflict:
          "The address was not changed: another account took it after the change was asked for. This token is used up; choose another address",
        invalid_request: "Paste the token from the confirmation email",
      });
    }
    $("#confirm-token").value = "";
    // The new address, when this page knows it (signed in, from the
    // pending change); signed out, it does not.
    const confirmed = pendingEmail;
    const signedIn = session.get();
    // The token does not say whose change it was. Whoever's it was, the
    // server ended that user's sessions: if this one still works, the
    // change was another account's (a link someone else sent).
    const mine = !signedIn || !(await sessionWorks(signedIn));
    if (!mine) {
      $("#confirm-back").textContent = "Back to my account";
      say(
        "That token confirmed an email change of another account, not yours: your address did not change, and you are still signed in. If you did not expect this link, tell your administrator who sent it.",
      );
      return;
    }
    if (signedIn) {
      // This session ended with the others: sign out here, without a
      // call that can only answer 401.
      session.clear();
      onSignedOut();
      signIn.reset();
    }
    pendingEmail = null;
    $("#signin-email").value = confirmed || "";
    $("#confirm-back").textContent = "Back to sign-in";
    const signInWith = confirmed ? `sign in with ${confirmed}` : "sign in with it";
    say(
      signedIn
        ? `Your new email address is confirmed. This ended your sessions, this one too: ${signInWith} from now on.`
        : `Your new email address is confirmed: ${signInWith} from now on.`,
    );
  });
});

window.addEventListener("hashchange", () => {
  takeLinkedToken();
  if (location.hash === CONFIRM_HASH) {
    clearMessages();
    showConfirm();
  } else if (session.get()) {
    onSignedIn().catch((error) => {
      if (!(error instanceof ApiError && error.code === "unauthorized")) fail(error);
    });
  } else {
    signIn.show();
  }
});

const signIn = boot({ views: VIEWS, onSignedIn, onSignedOut });
if (location.hash === CONFIRM_HASH && !session.get()) showConfirm();
