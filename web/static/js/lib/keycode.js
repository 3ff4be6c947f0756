// The therapist's key code: the links' `tk` (the first 16 bytes of SHA-256 of the therapist's identity key,
// base64url without padding, 22 characters; docs/security.md §3). The therapist's console shows it once, for the
// practice's administration; the admin page and `alcove room create --therapist-key-code` keep it on the admin's
// side and add it to the fragment of the client links they made. The fragment never reaches the server.

/**
 * The key code in its canonical form (white space removed). Throws TypeError when it is not one.
 * @param {string} text
 * @returns {string}
 */
export function parseKeyCode(text) {
  const code = text.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9_-]{22}$/.test(code)) throw new TypeError("not a therapist's key code");
  // 22 characters carry 132 bits: the last one must leave the 4 spare bits zero (canonical).
  const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".indexOf(code[21]);
  if (last & 0x0f) throw new TypeError("not a therapist's key code");
  return code;
}

/**
 * A client link with the key code as `tk` in its fragment (any earlier tk replaced). Throws TypeError when
 * the text is not a session link or the code is not a key code.
 * @param {string} link @param {string} code
 * @returns {string}
 */
export function withKeyCode(link, code) {
  const tk = parseKeyCode(code);
  const hash = link.indexOf("#");
  if (hash < 0) throw new TypeError("not a session link");
  const params = link.slice(hash + 1).split("&").filter((p) => p && !p.startsWith("tk="));
  if (!params.some((p) => p.startsWith("t=") && p.length > 2)) throw new TypeError("not a session link");
  return `${link.slice(0, hash)}#${params.join("&")}&tk=${tk}`;
}
