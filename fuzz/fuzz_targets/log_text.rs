//! Guest text made printable for a log line keeps no character that could
//! break, hide or reorder a line, and changes nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fuzz_target!(|text: &str| {
    let out = runner::host::printable(text);
    assert!(!out.chars().any(unsafe_char), "{out:?}");
    // Undoing the escapes gives the text back: nothing else was touched.
    // (A guest that writes `\u{...}` itself reads the same as an escape;
    // that cannot break a line, so it is left out of this check.)
    if text.contains("\\u{") {
        return;
    }
    let mut back = String::new();
    let mut rest = &*out;
    while let Some(at) = rest.find("\\u{") {
        back.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("an escape ends") + at;
        let code = u32::from_str_radix(&rest[at + 3..end], 16).expect("hex");
        back.push(char::from_u32(code).expect("a char"));
        rest = &rest[end + 1..];
    }
    back.push_str(rest);
    assert_eq!(back, text);
});
