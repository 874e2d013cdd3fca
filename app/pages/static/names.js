// Names on our pages: drawn so that no name can hide or turn text around.
//
// Room names and usernames come from anyone, and the server passes them on
// byte for byte, as the original does: a name may hold control characters
// (NUL, ESC, BEL), a right-to-left override (U+202E) that reverses whatever
// follows it, or invisible characters (U+200B) that make two names look the
// same. The pages draw such a character as a visible symbol (␀ ␛ ␇ for
// controls, [U+202E] for the others), and every name in its own bidi isolate
// (<bdi>), so its direction cannot leak into what is around it. The joiners
// U+200C and U+200D are left alone: scripts (Persian, Indic) and emoji
// sequences need them. Only ever through textContent, never as HTML.
"use strict";

const naneNames = (() => {
  const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g;

  // `name` with every hidden character shown.
  function visible(name) {
    return String(name).replace(HIDDEN, (c) => {
      const code = c.charCodeAt(0);
      if (code < 0x20) return String.fromCharCode(0x2400 + code); // ␀ … ␟
      if (code === 0x7f) return "\u2421"; // ␡
      return `[U+${code.toString(16).toUpperCase().padStart(4, "0")}]`;
    });
  }

  // A <bdi> element holding `name`, shown.
  function node(name, className) {
    const bdi = document.createElement("bdi");
    if (className) bdi.className = className;
    bdi.textContent = visible(name);
    return bdi;
  }

  // `name` shown, between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE: for plain text
  // that holds no elements (a page title, a status line).
  const isolated = (name) => `\u2068${visible(name)}\u2069`;

  return { visible, node, isolated };
})();
