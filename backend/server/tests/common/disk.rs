//! File systems that refuse writes, for the fault suites: a small tmpfs to fill up, a
//! read-only bind mount, and a child process without root's power to ignore permissions.
//!
//! Each needs root. Where it is refused the test says so and passes, except under CI
//! (`CI=true`), which runs as root and where a fault test that silently skips would test
//! nothing.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// True under CI, where a fault test must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "0" | "false"))
}

/// Fails under CI; elsewhere says why the test skips.
fn cannot(what: &str, why: &str) {
    assert!(!in_ci(), "CI must be able to {what} (run as root): {why}");
    eprintln!("SKIPPED: cannot {what} here (needs root): {why}");
}

/// Runs `command`, returning its stderr when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    match command.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

/// A tmpfs on a fresh temporary directory, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
    fillers: Vec<PathBuf>,
}

impl SmallDisk {
    /// A tmpfs of `size` ("32m"), or `None` (after saying why) where mounting is refused.
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("dir");
        let mounted = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path()));
        match mounted {
            Ok(()) => Some(Self {
                dir,
                fillers: Vec::new(),
            }),
            Err(why) => {
                cannot("mount a tmpfs", &why);
                None
            }
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file until the file system refuses another byte.
    pub fn fill(&mut self) {
        let path = self.path(&format!("filler-{}", self.fillers.len()));
        let mut file = std::fs::File::create_new(&path).expect("filler");
        self.fillers.push(path);
        let chunk = vec![7u8; 64 * 1024];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::StorageFull => return,
                Err(err) => panic!("filling the disk: {err}"),
            }
        }
    }

    /// Removes what [`Self::fill`] wrote.
    pub fn free(&mut self) {
        for filler in self.fillers.drain(..) {
            std::fs::remove_file(filler).expect("remove filler");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy, so a failed test with files still open leaves no mount behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A directory bound read-only onto itself: every write under it fails with EROFS, root's
/// included. Unmounted when dropped.
pub struct ReadOnlyMount {
    dir: PathBuf,
}

impl ReadOnlyMount {
    /// Makes `dir` read-only, or `None` (after saying why) where mounting is refused.
    pub fn bind(dir: &Path) -> Option<Self> {
        let bound = run(Command::new("mount").arg("--bind").arg(dir).arg(dir)).and_then(|()| {
            let read_only = run(Command::new("mount")
                .args(["-o", "remount,ro,bind"])
                .arg(dir));
            if read_only.is_err() {
                let _ = Command::new("umount").arg("-l").arg(dir).status();
            }
            read_only
        });
        match bound {
            Ok(()) => Some(Self {
                dir: dir.to_path_buf(),
            }),
            Err(why) => {
                cannot("bind-mount a directory read-only", &why);
                None
            }
        }
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// `command` wrapped so that it runs without the capabilities that let root write where
/// permissions say no (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER): a directory of mode
/// 0555 then refuses it as it would any user. Unchanged when not root, where permissions
/// already hold. `None` (after saying why) when root cannot drop them (no setpriv).
pub fn without_root_overrides(program: &Path) -> Option<tokio::process::Command> {
    if !is_root() {
        return Some(tokio::process::Command::new(program));
    }
    const DROP: &str = "--bounding-set=-dac_override,-dac_read_search,-fowner";
    // By its full path: the tests clear the child's environment, PATH included.
    let setpriv = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join("setpriv"))
        .find(|path| path.is_file());
    let Some(setpriv) = setpriv else {
        cannot("drop root's permission overrides", "no setpriv on PATH");
        return None;
    };
    if let Err(why) = run(Command::new(&setpriv).args([DROP, "--", "true"])) {
        cannot("drop root's permission overrides with setpriv", &why);
        return None;
    }
    let mut command = tokio::process::Command::new(setpriv);
    command.args([DROP, "--"]).arg(program);
    Some(command)
}
