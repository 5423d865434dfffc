// Small text helpers shared by the places that put outside text into one line of output.

/** The text with every run of control characters (line breaks included) turned into a space. */
export function oneLine(text: string): string {
  let result = '';
  let inControl = false;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    const control = code < 0x20 || code === 0x7f;
    if (control && !inControl) {
      result += ' ';
    } else if (!control) {
      result += char;
    }
    inControl = control;
  }
  return result;
}
