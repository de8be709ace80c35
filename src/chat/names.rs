//! Nicknames and room names people can trust: what a name may contain, and when two names are the
//! same name.
//!
//! A chat shows a nickname next to every message, so a name is a claim of identity. Two attacks
//! break that claim without breaking any byte-level rule:
//!
//! - **Invisible and direction-changing characters.** `alice` followed by a ZERO WIDTH SPACE is a
//!   different string that looks identical; a RIGHT-TO-LEFT OVERRIDE (U+202E) makes `ecila` display
//!   as `alice` (the "Trojan Source" trick, CVE-2021-42574). Unicode names these *format*
//!   characters (general category Cf, UAX #44 §5.7.1) and, more broadly, *default ignorable* code
//!   points (Unicode §5.21, DerivedCoreProperties.txt): a renderer shows nothing for them. They
//!   are refused, with the other characters that show as nothing or as an arbitrary glyph:
//!   controls (Cc), line and paragraph separators (Zl, Zp), private-use (Co) and unassigned (Cn)
//!   code points, blank look-alikes (the Hangul fillers, BRAILLE PATTERN BLANK), spaces other than
//!   U+0020, and runs of spaces (HTML collapses them, so `a  b` would show as the taken `a b`).
//! - **Look-alikes.** `ａｌｉｃｅ` (full-width), `ALICE`, `ﬁona` (a ligature) and `fiona` are
//!   different strings that a reader takes for the same name. Uniqueness is therefore decided on
//!   a *key* ([`NameKey`]): the compatibility caseless form of Unicode §3.13 (definition D146),
//!   `NFKD(toCasefold(NFKD(toCasefold(NFD(name)))))`, recomposed to NFC, with the variation
//!   selectors removed.
//!
//! **Case folding, not lower-casing.** `str::to_lowercase` is for display; Unicode §3.13 defines
//! caseless matching with case *folding* (CaseFolding.txt, status C and F), which `caseless`
//! implements. They differ where matching matters: folding maps `ß` and `ẞ` to `ss` and the final
//! sigma `ς` to `σ`, so `STRASSE`/`straße` and `ΟΔΥΣΣΕΥΣ`/`οδυσσευς` collide as a reader expects;
//! lower-casing keeps them apart. NFKC runs on both sides of the fold because folding can undo a
//! normalization (U+0345 folds to `ι`, U+1E9E to two letters), which is why D146 has two rounds.
//!
//! **Variation selectors are kept, not refused.** They are default ignorable, but they are how an
//! emoji picks its colour form (`❤` + U+FE0F) and how CJK text picks a glyph variant; they never
//! change which character a reader sees. They are allowed after a visible character and dropped
//! from the key, so `❤️` and `❤` are the same name. The ZERO WIDTH JOINER is refused even though
//! emoji sequences (`👩‍💻`) use it: it is a format character, and a joiner the font does not
//! support renders as nothing between two visible names.
//!
//! **Marks.** A name must not start with a combining mark (it would attach to whatever the page
//! shows before the name), and at most [`MAX_MARKS_IN_A_ROW`] marks may follow one character
//! ("Zalgo" text stacks dozens, painting over the lines around it).
//!
//! What this does *not* catch: confusables across scripts (Cyrillic `а` for Latin `a`). UTS #39's
//! skeletons or a single-script rule would (`unicode-security` implements both); they also refuse
//! or merge many honest names, and are left for later. A name that is all right-to-left letters is
//! allowed; the page shows names in elements with `dir="auto"` (or `<bdi>`) so it cannot reorder the
//! text around it.
//!
//! The rules are checked on the name as it will be shown: trimmed, then NFC (Unicode §3.11,
//! UAX #15), so that two canonically equivalent inputs are also stored and displayed the same.

use std::fmt;

use caseless::Caseless;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::protocol::{ErrorCode, MAX_NAME_CHARS, Rejection};

/// Most combining marks allowed after one character. Tibetan stacks reach three or four
/// (subjoined consonants and a vowel sign), and Vietnamese or Thai need two; "Zalgo" text uses
/// dozens. (UAX #15's stream-safe format allows 30, but that bounds buffering, not display.)
pub const MAX_MARKS_IN_A_ROW: usize = 4;

/// Most characters looked at before normalizing: a name of [`MAX_NAME_CHARS`] characters, each
/// followed by the most marks allowed, fully decomposed. Anything longer is refused without the
/// cost of normalizing it (a message may carry 64 KiB).
const MAX_RAW_CHARS: usize = MAX_NAME_CHARS * (1 + MAX_MARKS_IN_A_ROW);

/// What a name names, for the messages that refuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Nickname,
    Room,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Nickname => "nickname",
            NameKind::Room => "room name",
        })
    }
}

/// A valid name: what people see, and what decides whether it is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    display: String,
    key: NameKey,
}

impl Name {
    /// Checks `raw` against every rule of this module.
    pub fn parse(raw: &str) -> Result<Name, NameError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.chars().nth(MAX_RAW_CHARS).is_some() {
            return Err(NameError::TooLong {
                limit: MAX_NAME_CHARS,
            });
        }
        let display: String = trimmed.nfc().collect();
        if display.chars().nth(MAX_NAME_CHARS).is_some() {
            return Err(NameError::TooLong {
                limit: MAX_NAME_CHARS,
            });
        }
        check_characters(&display)?;
        let key = NameKey::of(&display);
        Ok(Name { display, key })
    }

    /// The name as shown: trimmed and in NFC.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The comparison key: two names with equal keys are the same name.
    pub fn key(&self) -> &NameKey {
        &self.key
    }

    pub fn into_parts(self) -> (String, NameKey) {
        (self.display, self.key)
    }
}

/// The form under which names are compared, for a `HashMap` of taken names. Build it with
/// [`Name::parse`], or [`NameKey::of`] for a name the server made itself (anonymous names) or
/// already accepted earlier (a resumed session's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(String);

impl NameKey {
    /// Unicode §3.13 D146 (compatibility caseless match) made into a key: NFD, fold, NFKD, fold,
    /// then NFKC so the key is short and printable; variation selectors dropped.
    pub fn of(name: &str) -> NameKey {
        let key = name
            .chars()
            .nfd()
            .default_case_fold()
            .nfkd()
            .default_case_fold()
            .filter(|&c| !is_variation_selector(c))
            .nfkc()
            .collect();
        NameKey(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A nickname from a client, or the `error` that refuses it.
pub fn nickname(raw: &str) -> Result<Name, Rejection> {
    Name::parse(raw).map_err(|error| error.rejection(NameKind::Nickname))
}

/// A room name from a client, or the `error` that refuses it. The same rules as a nickname: a
/// room's name is shown to everybody in it.
pub fn room(raw: &str) -> Result<Name, Rejection> {
    Name::parse(raw).map_err(|error| error.rejection(NameKind::Room))
}

/// A rule a name broke. Display completes "nickname ..." / "room name ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Nothing but whitespace.
    Empty,
    /// More than `limit` characters once trimmed and in NFC.
    TooLong { limit: usize },
    /// A control character (Cc) or a line or paragraph separator (Zl, Zp).
    Control(char),
    /// A format character (Cf) or another character that renders as nothing.
    Invisible(char),
    /// A space other than U+0020 (Zs): they render at other widths, or not at all.
    OddSpace(char),
    /// Two spaces in a row, which HTML shows as one.
    DoubleSpace,
    /// A private-use character (Co): its glyph is whatever a font puts there.
    PrivateUse(char),
    /// A code point not assigned in the Unicode version we know (Cn, noncharacters included).
    Unassigned(char),
    /// A combining mark with nothing before it to combine with.
    LeadingMark(char),
    /// More than `limit` combining marks after one character.
    TooManyMarks { limit: usize },
}

impl NameError {
    /// The `error` code a client gets: every broken rule is a payload the protocol refuses.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadPayload
    }

    /// The `error` a client gets for a `kind` of name that broke this rule.
    pub fn rejection(&self, kind: NameKind) -> Rejection {
        Rejection::new(self.code(), format!("{kind} {self}"))
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("must not be empty"),
            NameError::TooLong { limit } => write!(f, "must be at most {limit} characters"),
            NameError::Control(c) => write!(f, "must not contain the control character {}", Cp(*c)),
            NameError::Invisible(c) => write!(f, "must not contain the invisible character {}", Cp(*c)),
            NameError::OddSpace(c) => write!(f, "must use only plain spaces, not {}", Cp(*c)),
            NameError::DoubleSpace => f.write_str("must not contain two spaces in a row"),
            NameError::PrivateUse(c) => write!(f, "must not contain the private-use character {}", Cp(*c)),
            NameError::Unassigned(c) => write!(f, "must not contain the unassigned code point {}", Cp(*c)),
            NameError::LeadingMark(c) => write!(f, "must not start with the combining mark {}", Cp(*c)),
            NameError::TooManyMarks { limit } => {
                write!(
                    f,
                    "must not stack more than {limit} combining marks on a character"
                )
            }
        }
    }
}

impl std::error::Error for NameError {}

/// A code point as `U+XXXX`: the offending character itself may be invisible.
struct Cp(char);

impl fmt::Display for Cp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
}

/// Every per-character rule over the display form, then the marks rule.
fn check_characters(display: &str) -> Result<(), NameError> {
    let mut previous = None;
    for c in display.chars() {
        match c.general_category() {
            GeneralCategory::Control
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator => {
                return Err(NameError::Control(c));
            }
            GeneralCategory::Format => return Err(NameError::Invisible(c)),
            GeneralCategory::PrivateUse => return Err(NameError::PrivateUse(c)),
            GeneralCategory::Unassigned | GeneralCategory::Surrogate => return Err(NameError::Unassigned(c)),
            GeneralCategory::SpaceSeparator if c != ' ' => return Err(NameError::OddSpace(c)),
            _ => {}
        }
        if renders_as_nothing(c) {
            return Err(NameError::Invisible(c));
        }
        if c == ' ' && previous == Some(' ') {
            return Err(NameError::DoubleSpace);
        }
        previous = Some(c);
    }
    check_marks(display)
}

/// Marks are counted decomposed (NFD): a precomposed `á` carries its acute as surely as `a` +
/// U+0301 does, and NFC would otherwise hide one mark of every stack.
fn check_marks(display: &str) -> Result<(), NameError> {
    let mut marks_in_a_row = 0;
    for (index, c) in display.chars().nfd().enumerate() {
        if !is_mark(c.general_category()) {
            marks_in_a_row = 0;
            continue;
        }
        if index == 0 {
            return Err(NameError::LeadingMark(c));
        }
        marks_in_a_row += 1;
        if marks_in_a_row > MAX_MARKS_IN_A_ROW {
            return Err(NameError::TooManyMarks {
                limit: MAX_MARKS_IN_A_ROW,
            });
        }
    }
    Ok(())
}

fn is_mark(category: GeneralCategory) -> bool {
    matches!(
        category,
        GeneralCategory::NonspacingMark | GeneralCategory::SpacingMark | GeneralCategory::EnclosingMark
    )
}

/// Characters outside Cf that show as nothing or as a blank: the default ignorable code points of
/// other categories (DerivedCoreProperties.txt) other than the variation selectors, and the blank
/// that is not one.
fn renders_as_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'              // COMBINING GRAPHEME JOINER (Mn)
        | '\u{115F}'..='\u{1160}' // HANGUL CHOSEONG / JUNGSEONG FILLER (Lo)
        | '\u{17B4}'..='\u{17B5}' // KHMER VOWEL INHERENT AQ, AA (Mn): Unicode discourages them
        | '\u{3164}'              // HANGUL FILLER (Lo): the classic "invisible nickname"
        | '\u{FFA0}'              // HALFWIDTH HANGUL FILLER (Lo)
        | '\u{2800}' // BRAILLE PATTERN BLANK (So): not ignorable, but blank in every font
    )
}

/// The variation selectors (default ignorable, category Mn): they choose a glyph, never a
/// character.
fn is_variation_selector(c: char) -> bool {
    matches!(
        c,
        '\u{180B}'..='\u{180D}' | '\u{180F}' // MONGOLIAN FREE VARIATION SELECTORS
        | '\u{FE00}'..='\u{FE0F}'           // VARIATION SELECTOR-1..16
        | '\u{E0100}'..='\u{E01EF}' // VARIATION SELECTOR-17..256
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> String {
        match Name::parse(raw) {
            Ok(name) => name.key().as_str().to_owned(),
            Err(error) => panic!("{raw:?} was refused: {error}"),
        }
    }

    fn refused(raw: &str) -> NameError {
        match Name::parse(raw) {
            Ok(name) => panic!("{raw:?} was accepted as {:?}", name.display()),
            Err(error) => error,
        }
    }

    #[test]
    fn look_alikes_of_a_name_share_its_key() {
        let table = [
            ("alice", "ａｌｉｃｅ"), // full-width forms (NFKC)
            ("alice", "ALICE"),
            ("alice", "AlIcE"),
            ("fiona", "ﬁona"),        // the fi ligature (NFKC)
            ("office", "oﬃce"),       // the ffi ligature
            ("strasse", "STRAẞE"),    // capital sharp s folds to ss
            ("strasse", "straße"),    // so does small sharp s: folding, not lower-casing
            ("οδυσσευς", "ΟΔΥΣΣΕΥΣ"), // final sigma folds to sigma
            ("öd", "ÖD"),
            ("öd", "o\u{308}d"), // decomposed o + diaeresis (NFC)
            ("x2", "x²"),        // superscript two (compatibility form)
            ("ab", "ａ\u{FF42}"),
            ("kelvin", "\u{212A}elvin"), // KELVIN SIGN
            ("ω", "\u{2126}"),           // OHM SIGN
            ("ハ", "ﾊ"),                 // halfwidth katakana: NFKC widens it
            ("❤", "❤\u{FE0F}"),          // emoji presentation selector: same name
            ("a b", "A B"),
            ("ⅳ", "iv"), // ROMAN NUMERAL FOUR
            ("dž", "ǅ"), // titlecase digraph
        ];
        for (plain, look_alike) in table {
            assert_ne!(plain, look_alike, "a row that cannot fail");
            assert_eq!(key(plain), key(look_alike), "{plain:?} vs {look_alike:?}");
        }
    }

    #[test]
    fn different_names_keep_different_keys() {
        for (a, b) in [
            ("alice", "alicia"),
            ("a b", "ab"),
            ("bob1", "bob2"),
            ("é", "e"),
            ("ı", "i"),
        ] {
            assert_ne!(key(a), key(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn format_characters_are_refused() {
        for c in [
            '\u{200B}',  // ZERO WIDTH SPACE
            '\u{200C}',  // ZERO WIDTH NON-JOINER
            '\u{200D}',  // ZERO WIDTH JOINER
            '\u{200E}',  // LEFT-TO-RIGHT MARK
            '\u{200F}',  // RIGHT-TO-LEFT MARK
            '\u{202A}',  // LEFT-TO-RIGHT EMBEDDING
            '\u{202E}',  // RIGHT-TO-LEFT OVERRIDE
            '\u{2060}',  // WORD JOINER
            '\u{2066}',  // LEFT-TO-RIGHT ISOLATE
            '\u{2067}',  // RIGHT-TO-LEFT ISOLATE
            '\u{2068}',  // FIRST STRONG ISOLATE
            '\u{2069}',  // POP DIRECTIONAL ISOLATE
            '\u{FEFF}',  // ZERO WIDTH NO-BREAK SPACE (BOM)
            '\u{00AD}',  // SOFT HYPHEN
            '\u{061C}',  // ARABIC LETTER MARK
            '\u{180E}',  // MONGOLIAN VOWEL SEPARATOR
            '\u{E0041}', // TAG LATIN CAPITAL LETTER A
            '\u{1D173}', // MUSICAL SYMBOL BEGIN BEAM
        ] {
            for raw in [format!("ali{c}ce"), format!("alice{c}x"), format!("{c}alice")] {
                assert_eq!(refused(&raw), NameError::Invisible(c), "{raw:?}");
            }
        }
    }

    #[test]
    fn the_trojan_source_override_is_refused() {
        assert_eq!(refused("\u{202E}ecila"), NameError::Invisible('\u{202E}'));
        assert_eq!(refused("admin\u{2066}\u{2069}"), NameError::Invisible('\u{2066}'));
    }

    #[test]
    fn blanks_outside_the_format_category_are_refused() {
        for c in [
            '\u{3164}', '\u{FFA0}', '\u{115F}', '\u{1160}', '\u{2800}', '\u{034F}', '\u{17B4}',
        ] {
            let raw = format!("x{c}y");
            assert_eq!(refused(&raw), NameError::Invisible(c), "{raw:?}");
        }
        // A name made only of a blank is refused, not trimmed to nothing.
        assert_eq!(refused("\u{3164}"), NameError::Invisible('\u{3164}'));
    }

    #[test]
    fn control_characters_and_line_breaks_are_refused() {
        for c in [
            '\0', '\u{7}', '\u{1B}', '\u{7F}', '\u{85}', '\u{9B}', '\u{2028}', '\u{2029}',
        ] {
            let raw = format!("a{c}b");
            assert_eq!(refused(&raw), NameError::Control(c), "{raw:?}");
        }
        assert_eq!(refused("a\nb"), NameError::Control('\n'));
        assert_eq!(refused("a\tb"), NameError::Control('\t'));
    }

    #[test]
    fn spaces_other_than_u0020_are_refused() {
        for c in [
            '\u{A0}', '\u{2002}', '\u{2009}', '\u{200A}', '\u{202F}', '\u{205F}', '\u{3000}', '\u{1680}',
        ] {
            let raw = format!("a{c}b");
            assert_eq!(refused(&raw), NameError::OddSpace(c), "{raw:?}");
        }
    }

    #[test]
    fn two_spaces_in_a_row_are_refused() {
        assert_eq!(refused("a  b"), NameError::DoubleSpace);
        assert_eq!(key("a b"), "a b");
    }

    #[test]
    fn private_use_characters_are_refused() {
        for c in ['\u{E000}', '\u{F8FF}', '\u{F0000}', '\u{10FFFD}'] {
            assert_eq!(refused(&format!("a{c}")), NameError::PrivateUse(c));
        }
    }

    #[test]
    fn unassigned_code_points_and_noncharacters_are_refused() {
        for c in [
            '\u{0378}',
            '\u{FDD0}',
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{1FFFF}',
            '\u{E0FFF}',
        ] {
            assert_eq!(refused(&format!("a{c}")), NameError::Unassigned(c));
        }
    }

    #[test]
    fn a_name_may_not_start_with_a_combining_mark() {
        for c in ['\u{301}', '\u{20DD}', '\u{FE0F}', '\u{0903}'] {
            assert_eq!(refused(&format!("{c}bob")), NameError::LeadingMark(c));
        }
        // Leading whitespace is trimmed first, so the mark is still first.
        assert_eq!(refused(" \u{301}bob"), NameError::LeadingMark('\u{301}'));
    }

    #[test]
    fn marks_stacked_beyond_the_limit_are_refused() {
        let allowed = format!("a{}", "\u{301}\u{302}\u{303}\u{304}");
        assert!(Name::parse(&allowed).is_ok());
        // Precomposed letters count their own marks: NFC turns a + U+0301 into one character.
        assert_eq!(
            refused("á\u{302}\u{303}\u{304}\u{305}"),
            NameError::TooManyMarks {
                limit: MAX_MARKS_IN_A_ROW
            }
        );
        let zalgo = format!("a{}b", "\u{301}\u{302}\u{303}\u{304}\u{305}");
        assert_eq!(
            refused(&zalgo),
            NameError::TooManyMarks {
                limit: MAX_MARKS_IN_A_ROW
            }
        );
        // The count starts again at each character.
        let spread = "a\u{301}\u{302}\u{303}b\u{301}\u{302}\u{303}";
        assert!(Name::parse(spread).is_ok());
    }

    #[test]
    fn honest_names_in_many_scripts_are_accepted() {
        for name in [
            "alice",
            "Zoë",
            "Đặng Thị Ngọc",
            "山田太郎",
            "Ελένη",
            "Наташа",
            "שלום",
            "محمد",
            "देवनागरी",
            "བསྒྲུབས",
            "김민준",
            "bob_99",
            "Dr. Who",
            "❤️",
            "🦀 rustacean",
        ] {
            let parsed = Name::parse(name).map_err(|error| format!("{name:?}: {error}"));
            assert_eq!(
                parsed.map(|n| n.display().to_owned()),
                Ok(name.nfc().collect::<String>())
            );
        }
    }

    #[test]
    fn emoji_zwj_sequences_are_refused() {
        assert_eq!(refused("👩\u{200D}💻"), NameError::Invisible('\u{200D}'));
    }

    #[test]
    fn a_name_is_trimmed_and_shown_in_nfc() {
        let name = Name::parse("  Zoe\u{308}\t").map_err(|error| error.to_string());
        assert_eq!(name.as_ref().map(Name::display), Ok("Zoë"));
    }

    #[test]
    fn empty_and_blank_names_are_refused() {
        for raw in ["", " ", "\t\n", "\u{3000}", "\u{A0} \u{2003}"] {
            assert_eq!(refused(raw), NameError::Empty, "{raw:?}");
        }
    }

    #[test]
    fn length_is_counted_in_characters_after_nfc() {
        let longest = "é".repeat(MAX_NAME_CHARS);
        assert!(Name::parse(&longest).is_ok());
        // Decomposed, the same name is twice as many code points, and still allowed.
        let decomposed = "e\u{301}".repeat(MAX_NAME_CHARS);
        assert_eq!(
            Name::parse(&decomposed).map(|n| n.display().to_owned()),
            Ok(longest)
        );
        let too_long = "é".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            refused(&too_long),
            NameError::TooLong {
                limit: MAX_NAME_CHARS
            }
        );
    }

    #[test]
    fn a_huge_name_is_refused_before_normalizing() {
        let huge = "\u{301}".repeat(64 * 1024);
        assert_eq!(
            refused(&format!("a{huge}")),
            NameError::TooLong {
                limit: MAX_NAME_CHARS
            }
        );
    }

    #[test]
    fn the_key_is_stable_under_itself() {
        // A key computed from a key is the same key: looking a key up never moves it.
        for raw in ["ＡＬＩＣＥ", "STRAẞE", "ﬃ", "\u{345}", "ǅ", "ΐ", "İstanbul", "ᾈ"] {
            let once = NameKey::of(raw);
            assert_eq!(NameKey::of(once.as_str()), once, "{raw:?}");
        }
    }

    #[test]
    fn errors_name_the_code_point_and_the_kind_of_name() {
        let rejection = match nickname("a\u{200B}b") {
            Err(rejection) => rejection,
            Ok(name) => panic!("accepted {name:?}"),
        };
        assert_eq!(rejection.0, ErrorCode::BadPayload);
        assert_eq!(
            rejection.1,
            "nickname must not contain the invisible character U+200B"
        );
        let rejection = room("").err().map(|r| r.1);
        assert_eq!(rejection.as_deref(), Some("room name must not be empty"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn the_key_of_any_string_is_a_fixed_point(raw in "\\PC{0,12}|[\\u{0}-\\u{10FFFF}]{0,8}") {
                let once = NameKey::of(&raw);
                prop_assert_eq!(NameKey::of(once.as_str()), once);
            }

            #[test]
            fn a_valid_name_parses_again_to_itself(raw in "[\\u{0}-\\u{3000}]{1,12}") {
                // What is shown and stored must pass the same rules when it comes back (a resumed
                // session, a name read from the store) and keep its key.
                if let Ok(name) = Name::parse(&raw) {
                    prop_assert_eq!(Name::parse(name.display()), Ok(name.clone()));
                }
            }
        }
    }
}
