//! The repository's scripts as a newcomer runs them: the grpcurl walk-through fails at once,
//! with the server's own words, when the server does not start, instead of dialling a server
//! that is not there fifteen times and deleting the log that says why.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn smoke_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/grpcurl-smoke.sh")
}

/// A stand-in server that fails the way a real one can at start-up.
fn failing_server(dir: &Path) -> PathBuf {
    let path = dir.join("fake-server");
    std::fs::write(
        &path,
        "#!/bin/sh\necho 'Error: cannot listen on 127.0.0.1:50051: address in use' >&2\nexit 3\n",
    )
    .expect("write the fake server");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn the_walk_through_stops_at_once_and_shows_the_log_when_the_server_does_not_start() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new("bash")
        .arg(smoke_script())
        .arg(failing_server(dir.path()))
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("exited with status 3 before serving"),
        "{stdout}"
    );
    assert!(stdout.contains("server: Error: cannot listen"), "{stdout}");
    assert!(!stdout.contains("ok   "), "no check ran: {stdout}");
}

#[test]
fn the_walk_through_names_a_missing_binary() {
    let out = Command::new("bash")
        .arg(smoke_script())
        .arg("/nonexistent/stigmer-server")
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("no server binary at /nonexistent/stigmer-server"),
        "{stdout}"
    );
}

/// The repository stands alone: every relative link in its Markdown points at a file inside it
/// (a link to `../shared/CONTRACT.md` once sent readers outside the clone).
#[test]
fn every_relative_link_in_the_docs_resolves_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root");
    let mut documents = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("BENCHMARKS.md"),
        root.join("apis/PROTOS.md"),
    ];
    for dir in ["docs", "docs/adr"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("docs") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                documents.push(path);
            }
        }
    }
    let mut broken = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).expect("read");
        for target in relative_links(&text) {
            let resolved = document.parent().expect("dir").join(&target);
            let inside = resolved
                .canonicalize()
                .is_ok_and(|path| path.starts_with(&root));
            if !inside {
                broken.push(format!("{}: {target}", document.display()));
            }
        }
    }
    assert!(documents.len() > 20, "{documents:?}");
    assert!(
        broken.is_empty(),
        "links leaving the repository or broken: {broken:#?}"
    );
}

/// Targets of `[text](target)` links that are not URLs or anchors, outside code spans.
fn relative_links(text: &str) -> Vec<String> {
    let prose: String = text
        .lines()
        .filter(|line| !line.starts_with("    "))
        .map(|line| {
            // Every other backtick-separated piece is code.
            let kept: Vec<&str> = line.split('`').step_by(2).collect();
            kept.join(" ") + "\n"
        })
        .collect();
    prose
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or_default().to_string())
        .filter(|target| !target.is_empty() && !target.contains("://"))
        .collect()
}

/// The README's install step exists and installs both binaries from this checkout, locked.
#[test]
fn make_install_installs_the_cli_and_the_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("make")
        .args(["-n", "install"])
        .current_dir(&root)
        .output()
        .expect("make -n");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    for crate_dir in ["backend/cli", "backend/server"] {
        assert!(
            plan.contains(&format!("install --locked --path {crate_dir}")),
            "{plan}"
        );
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(
        readme.contains("make install"),
        "the README tells users to run it"
    );
}
