//! How the commands print what is shared between them.

use serde::Serialize;

/// `report` as one line of JSON with its keys sorted, as the bench commands have always
/// printed their objects.
pub fn json_line(report: &impl Serialize) -> String {
    // Reports are plain structs of numbers, strings, lists and JSON values: they always
    // serialize.
    serde_json::to_value(report)
        .expect("a bench report serializes to JSON")
        .to_string()
}

/// `println!` that returns write errors (such as a closed pipe) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
    };
}
