//! The crate's rooms import one way: each only from rooms on its own line or below in the
//! "Layers" list of `src/lib.rs`, and rooms on one line not in a circle. Read from the sources.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Room name to line number, from the crate docs.
fn layers(lib: &str) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut line = 0;
    for text in lib.lines().filter_map(|l| l.strip_prefix("//!")) {
        let text = text.trim_start();
        if let Some((number, _)) = text.split_once(". ") {
            if let Ok(n) = number.parse::<usize>() {
                line = n;
            }
        }
        if line == 0 {
            continue;
        }
        for part in text.split("[`").skip(1) {
            if let Some((name, _)) = part.split_once("`]") {
                if !name.contains("::") {
                    map.entry(name.to_string()).or_insert(line);
                }
            }
        }
    }
    map
}

/// Every `crate::room` a file's code names (comments, doc links included, are not imports).
fn imports(text: &str) -> HashSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    code.split("crate::")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

fn room_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let layers = layers(&lib);
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: HashMap<String, HashSet<String>> = HashMap::new();
    let mut wrong = Vec::new();
    for file in files {
        let room = room_of(&file, &src);
        if room == "lib" || room == "main" {
            continue;
        }
        let Some(&own) = layers.get(&room) else {
            wrong.push(format!("{room} is not in the Layers list of src/lib.rs"));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        for used in imports(&text) {
            if used == room {
                continue;
            }
            let Some(&theirs) = layers.get(&used) else {
                wrong.push(format!(
                    "{}: crate::{used} is not in the Layers list",
                    file.display()
                ));
                continue;
            };
            if theirs < own {
                wrong.push(format!(
                    "{}: {room} (line {own}) imports {used} (line {theirs}), a room above it",
                    file.display()
                ));
            }
            if theirs == own {
                edges.entry(room.clone()).or_default().insert(used);
            }
        }
    }
    // No circle among rooms of one line.
    for (a, targets) in &edges {
        for b in targets {
            if edges.get(b).is_some_and(|t| t.contains(a)) {
                wrong.push(format!("{a} and {b} import each other"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        layers.len() >= 20,
        "the Layers list names {} rooms",
        layers.len()
    );
}
