// The self-service page: the caller's MFA status (mfaDetails), authenticator
// and email enrollment, recovery codes shown once, self reset and the
// personal opt-in. Every action is a call to the JSON API (spec/API.md).

import {
  $,
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

const VIEWS = ["signin-view", "account-view"];

let me = null;
let details = null;
let enrollingAuthenticator = false;
let recoveryCodes = [];

const fullName = (u) => `${u.firstName} ${u.lastName}`.trim() || u.email;
const token = () => {
  const s = session.get();
  return s && s.token;
};

async function onSignedIn() {
  await refresh();
  showView(VIEWS, "account-view");
}

function onSignedOut() {
  me = null;
  details = null;
  enrollingAuthenticator = false;
  recoveryCodes = [];
  $("#who").hidden = true;
  $("#recovery-result").hidden = true;
  $("#recovery-codes").replaceChildren();
  $("#enroll-authenticator").replaceChildren();
  $("#enroll-email").replaceChildren();
}

async function refresh() {
  const [meAnswer, mfa] = await Promise.all([call("GET", "/user/users/me"), call("GET", "/oauth/users/mfaDetails")]);
  me = meAnswer;
  details = mfa;
  render();
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
      onDone: async () => {
        $("#enroll-email").replaceChildren();
        await refresh();
        say("Email codes verified.");
      },
    });
  }

  $("#generate-recovery").disabled = !anyFactor;
  $("#recovery-needs-factor").hidden = anyFactor;
  $("#toggle-opt-in").checked = me.mfaOptIn;
}

// ---- authenticator

$("#start-authenticator").addEventListener("click", async (event) => {
  enrollingAuthenticator = true;
  const widget = mountAuthenticatorEnrollment($("#enroll-authenticator"), {
    token,
    onDone: async () => {
      enrollingAuthenticator = false;
      $("#enroll-authenticator").replaceChildren();
      await refresh();
      say("Authenticator app verified. From now on, sign in with a code from the app.");
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
$("#self-reset-confirm").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await call("POST", "/users/mfa/resetMyQRCodeEnroll");
    selfResetDialog.close();
    await refresh();
    say("Your authenticator was reset. Set up a new one below.");
    $("#start-authenticator").focus();
  } catch (error) {
    selfResetDialog.close();
    fail(error);
  } finally {
    button.disabled = false;
  }
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
    say(on ? "From your next sign-in, MFA is asked every time." : "MFA is no longer asked for your own choice; your org may still require it.");
  } catch (error) {
    toggle.checked = !on;
    fail(error);
  } finally {
    toggle.disabled = false;
    toggle.focus();
  }
});

boot({ views: VIEWS, onSignedIn, onSignedOut });
